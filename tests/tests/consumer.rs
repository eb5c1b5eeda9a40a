//! The shared consumer loop and sled projection against a real nats-server: each event is
//! applied once, a projection whose directory is lost is rebuilt from the stream, and an
//! unreadable message becomes a counted dead letter instead of blocking the consumer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use xinfang_shared::consumer::{self, ConsumerMetrics, Outcome, Spec};
use xinfang_shared::event::{Actor, Envelope, EventData};
use xinfang_shared::ids::{CaseId, NodeCode};
use xinfang_shared::ledger::{Expect, Ledger};
use xinfang_shared::projection::Projection;
use xinfang_shared::{subjects, CancellationToken};
use xinfang_tests::NatsServer;

fn event(i: u32) -> Envelope {
    Envelope::new(
        format!("ev-{i}"),
        CaseId::parse(&format!("320211-20261127-{:06}", i % 5 + 1)).unwrap(),
        NodeCode::parse("320211").unwrap(),
        xinfang_shared::time::to_cst(chrono::Utc::now().fixed_offset()),
        Actor::system("test"),
        None,
        EventData::Closed { reason: "test".into() },
    )
}

/// Counts events per case into the projection until `want` have been applied.
async fn project(
    ledger: &Ledger,
    dir: &std::path::Path,
    want: u64,
) -> (Projection, ConsumerMetrics, prometheus::Registry) {
    let projection = Projection::open(dir, "counts").unwrap();
    let registry = prometheus::Registry::new();
    let metrics = ConsumerMetrics::register(&registry, "test");
    let shutdown = CancellationToken::new();
    let spec = Spec {
        stream: ledger.stream_name().to_string(),
        durable: "test-projection".into(),
        filter_subjects: vec![subjects::case_events(ledger.node())],
        max_deliver: 3,
        resume_after: Some(projection.last_applied()),
    };
    let applied = Arc::new(Mutex::new(0u64));
    let (p, a, s) = (projection.clone(), applied.clone(), shutdown.clone());
    let task =
        tokio::spawn(consumer::run(ledger.jetstream().clone(), spec, metrics.clone(), shutdown.clone(), move |d| {
            let (p, a, s) = (p.clone(), a.clone(), s.clone());
            async move {
                let key = d.event.case_id.to_string();
                let n = p
                    .tree()
                    .get(&key)
                    .unwrap()
                    .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap()))
                    .unwrap_or(0);
                let mut batch = xinfang_shared::projection::Batch::default();
                batch.insert(key.as_bytes(), &(n + 1).to_be_bytes());
                match p.apply(d.seq, batch).await {
                    Ok(_) => {
                        let mut a = a.lock().unwrap();
                        *a = p.last_applied();
                        if *a >= want {
                            s.cancel();
                        }
                        Outcome::Done
                    }
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
        }));
    tokio::time::timeout(Duration::from_secs(30), task).await.expect("projection caught up").unwrap();
    (projection, metrics, registry)
}

fn counts(p: &Projection) -> Vec<(String, u64)> {
    p.tree()
        .iter()
        .filter_map(|kv| kv.ok())
        .filter(|(k, _)| k[0] != 0)
        .map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), u64::from_be_bytes(v.as_ref().try_into().unwrap())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_applies_once_and_rebuilds_from_the_stream() {
    let nats = NatsServer::start(false);
    let ledger = Ledger::open(nats.jetstream().await, NodeCode::parse("320211").unwrap()).await.unwrap();
    for i in 0..50 {
        ledger.append(&event(i), Expect::Any).await.unwrap();
    }
    // a message that is not an event: dead-lettered, not retried forever
    let js = ledger.jetstream();
    js.publish("xf.320211.case.320211-20261127-000001.junk", "not json".into()).await.unwrap().await.unwrap();
    // the same event id again: dropped by the stream's duplicate window
    ledger.append(&event(7), Expect::Any).await.unwrap();
    for i in 50..60 {
        ledger.append(&event(i), Expect::Any).await.unwrap();
    }
    let last = 61; // 60 events + the junk message
    let dir = tempfile::tempdir().unwrap();
    let (first, metrics, registry) = project(&ledger, dir.path(), last).await;
    let before = counts(&first);
    assert_eq!(before.iter().map(|(_, n)| n).sum::<u64>(), 60, "{before:?}");
    drop(metrics);
    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    assert!(text.contains("xf_test_dead_letters_total{reason=\"unreadable\"} 1"), "{text}");
    drop(first);

    // lose the sled directory: the consumer is ahead of the projection and must replay
    std::fs::remove_dir_all(dir.path()).unwrap();
    let (rebuilt, _, _) = project(&ledger, dir.path(), last).await;
    assert_eq!(counts(&rebuilt), before, "rebuilt projection equals the original");
}

/// Runs a consumer named `durable` over the whole ledger, handling each event after a pause
/// and asking for one retry of `ev-3`; returns the events handled (`Done`) by the moment it
/// reports itself caught up.
async fn handled_when_caught_up(ledger: &Ledger, durable: &str) -> usize {
    let registry = prometheus::Registry::new();
    let metrics = ConsumerMetrics::register(&registry, "test");
    let shutdown = CancellationToken::new();
    let spec = Spec {
        stream: ledger.stream_name().to_string(),
        durable: durable.into(),
        filter_subjects: vec![subjects::case_events(ledger.node())],
        max_deliver: 3,
        resume_after: None,
    };
    let done = Arc::new(Mutex::new(Vec::<String>::new()));
    let (caught_up, mut seen) = tokio::sync::watch::channel(false);
    let d = done.clone();
    let task = tokio::spawn(consumer::run_reporting(
        ledger.jetstream().clone(),
        spec,
        metrics,
        shutdown.clone(),
        caught_up,
        move |delivery| {
            let d = d.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if delivery.event.event_id == "ev-3" && delivery.delivered == 1 {
                    return Outcome::Retry("once".into());
                }
                d.lock().unwrap().push(delivery.event.event_id.clone());
                Outcome::Done
            }
        },
    ));
    tokio::time::timeout(Duration::from_secs(30), seen.wait_for(|c| *c)).await.expect("caught up").unwrap();
    let done = done.lock().unwrap().clone();
    shutdown.cancel();
    task.await.unwrap();
    // a retried event is handled again before any later one (a projection applies in order)
    if let Some(i) = done.iter().position(|e| e == "ev-3") {
        assert_eq!(done.get(i + 1).map(String::as_str), Some("ev-4"), "{done:?}");
    }
    done.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caught_up_is_reported_only_when_everything_in_the_stream_is_handled() {
    let nats = NatsServer::start(false);
    let ledger = Ledger::open(nats.jetstream().await, NodeCode::parse("320211").unwrap()).await.unwrap();
    assert_eq!(handled_when_caught_up(&ledger, "empty").await, 0, "an empty stream is caught up at once");

    for i in 0..40 {
        ledger.append(&event(i), Expect::Any).await.unwrap();
    }
    // the last message is unreadable: terming it also counts as handled
    let js = ledger.jetstream();
    js.publish("xf.320211.case.320211-20261127-000001.junk", "not json".into()).await.unwrap().await.unwrap();
    // ev-3 is retried after a second's backoff, long after the server has delivered the rest
    assert_eq!(handled_when_caught_up(&ledger, "full").await, 40);
}

/// The long fault campaign's lost timers: a process killed while it holds deliveries (handed
/// over, not acknowledged) and restarted at once. The server hands those out again only after
/// its ack wait, and the restarted process must not have applied later events by then, or its
/// projection takes the late ones for done and drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_held_by_a_dead_process_are_applied_before_anything_after_them() {
    let nats = NatsServer::start(false);
    let node = NodeCode::parse("320211").unwrap();
    let ledger = Ledger::open(nats.jetstream().await, node.clone()).await.unwrap();
    for i in 0..10 {
        ledger.append(&event(i), Expect::Any).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    {
        // the first process, on its own connection, applies ev-0..ev-2 and dies on ev-3
        let own = Ledger::open(nats.jetstream().await, node.clone()).await.unwrap();
        let projection = Projection::open(dir.path(), "counts").unwrap();
        let registry = prometheus::Registry::new();
        let spec = Spec {
            stream: own.stream_name().to_string(),
            durable: "test-projection".into(),
            filter_subjects: vec![subjects::case_events(own.node())],
            max_deliver: 3,
            resume_after: Some(projection.last_applied()),
        };
        let p = projection.clone();
        let task = tokio::spawn(consumer::run(
            own.jetstream().clone(),
            spec,
            ConsumerMetrics::register(&registry, "test"),
            CancellationToken::new(),
            move |d| {
                let p = p.clone();
                async move {
                    if d.event.event_id == "ev-3" {
                        futures::future::pending::<()>().await;
                    }
                    let mut batch = xinfang_shared::projection::Batch::default();
                    batch.insert(d.event.case_id.to_string().as_bytes(), &1u64.to_be_bytes());
                    p.apply(d.seq, batch).await.unwrap();
                    Outcome::Done
                }
            },
        ));
        while projection.last_applied() < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await; // holding what it was handed
        task.abort();
        let _ = task.await;
        projection.flush().await.unwrap();
    }
    for i in 10..15 {
        ledger.append(&event(i), Expect::Any).await.unwrap();
    }
    // restarted at once: every event from ev-3 on is applied, in order, before the ack wait
    let started = std::time::Instant::now();
    let (p, _, _) = project(&ledger, dir.path(), 15).await;
    assert!(started.elapsed() < Duration::from_secs(8), "not left waiting for the ack wait");
    let applied = counts(&p).iter().map(|(_, n)| n).sum::<u64>();
    // the first process wrote 1 per case it saw (ev-0..ev-2: three cases); the second counts on
    assert_eq!(applied, 3 + 12, "ev-3..ev-14 applied once each after ev-0..ev-2");
}
