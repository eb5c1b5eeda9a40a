//! Probe: what a case read costs nats-server. A ledger-shaped stream of `--cases` cases with
//! two events each; then 32 concurrent readers read every case (a) with a batched direct get
//! on its own inbox subscription (`ledger::read_direct`), (b) with a single direct get of the
//! case's first event (`get_last_raw_message_by_subject` on an exact subject, through the
//! client's request inbox), (c) the same batched request with `batch: 1`.
//! `cargo run --release -p xinfang-tests --example direct_probe`

use std::sync::Arc;
use std::time::Instant;

use std::future::IntoFuture;

use futures::future::join_all;
use tokio::sync::Semaphore;
use xinfang_tests::NatsServer;

#[tokio::main]
async fn main() {
    let cases: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(6000);
    let nats = NatsServer::start(false);
    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "PROBE".into(),
        subjects: vec!["xf.320211.case.>".into()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .expect("stream");
    let payload = bytes::Bytes::from(vec![b'x'; 1000]);
    let mut acks = Vec::new();
    for kind in ["registered", "routed"] {
        for i in 0..cases {
            acks.push(
                js.publish(format!("xf.320211.case.320211-20261202-{i:06}.{kind}"), payload.clone()).await.unwrap(),
            );
            if acks.len() >= 512 {
                join_all(acks.drain(..).map(|a| a.into_future())).await;
            }
        }
    }
    join_all(acks.into_iter().map(|a| a.into_future())).await;
    let sem = Arc::new(Semaphore::new(32));
    for way in ["batched, own inbox", "single get, request inbox", "batch of 1, own inbox"] {
        let started = Instant::now();
        let tasks = (0..cases).map(|i| {
            let (js, sem) = (js.clone(), sem.clone());
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.unwrap();
                let case = format!("320211-20261202-{i:06}");
                match way {
                    "batched, own inbox" => {
                        let n = xinfang_shared::ledger::read_direct(&js, "PROBE", &format!("xf.320211.case.{case}.*"))
                            .await
                            .map(|v| v.len())
                            .unwrap_or_else(|_| 0);
                        n
                    }
                    "single get, request inbox" => {
                        let s = js.get_stream_no_info("PROBE").await.unwrap();
                        s.direct_get_last_for_subject(format!("xf.320211.case.{case}.registered")).await.map(|_| 1).unwrap()
                    }
                    _ => {
                        let client = js.client();
                        let inbox = client.new_inbox();
                        let mut sub = client.subscribe(inbox.clone()).await.unwrap();
                        let req = serde_json::json!({"seq": 1, "next_by_subj": format!("xf.320211.case.{case}.*"), "batch": std::env::var("PROBE_BATCH").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(1)});
                        client.publish_with_reply("$JS.API.DIRECT.GET.PROBE", inbox, req.to_string().into()).await.unwrap();
                        use futures::StreamExt;
                        let mut n = 0;
                        while let Some(m) = sub.next().await {
                            if m.status.is_some() {
                                break;
                            }
                            n += 1;
                        }
                        n
                    }
                }
            })
        });
        let read: usize = join_all(tasks).await.into_iter().map(|r| r.unwrap()).sum();
        println!("{way}: {:.0} reads/s ({read} messages)", cases as f64 / started.elapsed().as_secs_f64());
    }
}
