//! Probe: what each part of a ledger append costs nats-server with fsync always. Each row on a
//! fresh server: `--appends` (5000) appends of 1.6 KB, 32 in flight, to new case subjects of the
//! node's real case stream (`ledger::provision`):
//! (a) a plain publish, (b) with the ledger's headers (message id for deduplication, type,
//! traceparent), (c) also on condition that the case is new (`Expect::NewCase`: the expected
//! last sequence of the case's wildcard subject), (d) as (c) with two consumers of the stream
//! fetching and acking every event meanwhile (as intake's projections do), (e) as (b) with the
//! two consumers.
//! `cargo run --release -p xinfang-tests --example append_probe [-- --appends N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Semaphore;
use xinfang_shared::ids::NodeCode;
use xinfang_shared::{ledger, subjects};
use xinfang_tests::NatsServer;

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    Headers,
    NewCase,
    NewCaseConsumed,
    HeadersConsumed,
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let n: usize = argv.windows(2).find(|w| w[0] == "--appends").map_or(5000, |w| w[1].parse().expect("N"));
    println!("| append (fsync always, {n} appends, 32 in flight) | appends/s |");
    println!("| --- | --- |");
    for (name, v) in [
        ("(a) plain publish", Variant::Plain),
        ("(b) with the ledger's headers (message id, type, traceparent)", Variant::Headers),
        ("(c) as (b), on condition that the case is new", Variant::NewCase),
        ("(d) as (c), two consumers fetching and acking meanwhile", Variant::NewCaseConsumed),
        ("(e) as (b), two consumers fetching and acking meanwhile", Variant::HeadersConsumed),
    ] {
        println!("| {name} | {:.0} |", run(n, v).await);
    }
}

async fn run(n: usize, variant: Variant) -> f64 {
    let nats = NatsServer::start(true);
    let js = nats.jetstream().await;
    let node = NodeCode::parse("320211").expect("node");
    ledger::provision(&js, &node, 1).await.expect("streams");
    let consumers: Vec<_> = if matches!(variant, Variant::NewCaseConsumed | Variant::HeadersConsumed) {
        let mut tasks = Vec::new();
        for name in ["probe-a", "probe-b"] {
            let stream = js.get_stream(subjects::case_stream(&node)).await.expect("stream");
            let consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(name.into()),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    max_ack_pending: 1,
                    ..Default::default()
                })
                .await
                .expect("consumer");
            tasks.push(tokio::spawn(async move {
                let mut messages = consumer.messages().await.expect("messages");
                let mut seen = 0;
                while let Some(Ok(m)) = messages.next().await {
                    m.double_ack().await.expect("ack");
                    seen += 1;
                    if seen == n {
                        break;
                    }
                }
            }));
        }
        tasks
    } else {
        Vec::new()
    };
    let payload = bytes::Bytes::from(vec![b'x'; 1600]);
    let sem = Arc::new(Semaphore::new(32));
    let started = Instant::now();
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let case = format!("320211-20261203-{i:06}");
        let subject = format!("xf.320211.case.{case}.registered");
        let fut = if variant == Variant::Plain {
            js.publish(subject, payload.clone()).await.expect("publish")
        } else {
            let mut headers = ledger::headers(&format!("01PROBE{i:08}"), "registered");
            if matches!(variant, Variant::NewCase | Variant::NewCaseConsumed) {
                headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
                headers
                    .insert("Nats-Expected-Last-Subject-Sequence-Subject", format!("xf.320211.case.{case}.*").as_str());
            }
            js.publish_with_headers(subject, headers, payload.clone()).await.expect("publish")
        };
        acks.push(tokio::spawn(async move {
            fut.await.expect("ack");
            drop(permit);
        }));
    }
    futures::future::join_all(acks).await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    for c in consumers {
        let _ = tokio::time::timeout(Duration::from_secs(60), c).await;
    }
    rate
}
