//! What in a message costs nats-server time in a fast-ingest burst: 100,000 messages of 350 B
//! as one batch, per variant, on one fresh server, each variant on its own file stream; every
//! variant runs twice, interleaved, so the machine's drift shows.
//!
//! `cargo run --release -p xinfang-tests --example ingest_probe -- plain headers trace subject consumer`
//!
//! - `plain`: `Nats-Msg-Id` only, short subjects (the baseline);
//! - `headers`: the ledger's three headers (`Nats-Msg-Id`, `Xf-Type`, `traceparent`);
//! - `xftype`, `trace`: `Nats-Msg-Id` and one of the other two;
//! - `pad`: `Nats-Msg-Id` and one unrelated header as long as the other two together;
//! - `subject`: the ledger's long case subjects;
//! - `consumer`: a durable consumer with 19 filters (as the deadlines service has) on the stream.

use std::time::{Duration, Instant};

use xinfang_shared::fast_ingest::FastBatch;
use xinfang_tests::NatsServer;

const TRACEPARENT: &str = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01";

fn headers(i: usize, variant: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    let id = format!("320211-20261101-{i:06}:acceptance:1764000000:breached");
    headers.insert("Nats-Msg-Id", id.as_str());
    match variant {
        "headers" => {
            headers.insert("Xf-Type", "deadline_breached");
            headers.insert("traceparent", TRACEPARENT);
        }
        "xftype" => headers.insert("Xf-Type", "deadline_breached"),
        "trace" => headers.insert("traceparent", TRACEPARENT),
        "pad" => headers.insert("Xpad", "x".repeat(85).as_str()),
        _ => {}
    }
    headers
}

#[tokio::main]
async fn main() {
    let n = 100_000;
    let nats = NatsServer::start(false);
    let js = nats.jetstream().await;
    let payload = bytes::Bytes::from(vec![b'x'; 350]);
    let variants: Vec<String> = std::env::args().skip(1).collect();
    for rep in 0..2 {
        for v in &variants {
            let name = format!("P{rep}_{v}");
            js.create_stream(async_nats::jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("p{rep}{v}.>")],
                storage: async_nats::jetstream::stream::StorageType::File,
                duplicate_window: Duration::from_secs(3600),
                allow_batch_publish: true,
                ..Default::default()
            })
            .await
            .expect("stream");
            if v == "consumer" {
                let filters: Vec<String> = (0..19).map(|k| format!("p{rep}{v}.case.*.t{k}")).collect();
                let stream = js.get_stream(&name).await.expect("stream");
                stream
                    .create_consumer(async_nats::jetstream::consumer::pull::Config {
                        durable_name: Some("d".into()),
                        filter_subjects: filters,
                        ..Default::default()
                    })
                    .await
                    .expect("consumer");
            }
            let started = Instant::now();
            let mut batch = FastBatch::open(&js.client(), 500, Duration::from_secs(10)).await.expect("batch");
            for i in 0..n {
                let subject = if v == "subject" {
                    format!("p{rep}{v}.320211.case.320211-20261101-{i:06}.deadline_breached")
                } else {
                    format!("p{rep}{v}.case.{i}.x")
                };
                batch.add(subject.into(), headers(i, v), payload.clone()).await.expect("add");
            }
            assert_eq!(batch.finish().await.expect("finish"), n as u64);
            println!("round {rep} {v}: {:.3} s", started.elapsed().as_secs_f64());
            js.delete_stream(&name).await.expect("delete");
        }
    }
}
