//! `xinfang-bench`: intake throughput and latency next to raw JetStream acked publishes,
//! measured in the same run on the same nats-server (and raw sled inserts for reference).
//!
//! Usage: `xinfang-bench [--petitions N] [--concurrency C]` after
//! `cargo build --release --workspace --bins`. Prints a Markdown report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::TryStreamExt;
use serde_json::Value;
use tokio::sync::Semaphore;
use xinfang_tests::{node_toml, petition, petition_by, NatsServer, ServiceProcess};

struct Args {
    petitions: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args { petitions: 5000, concurrency: 32 };
    let argv: Vec<String> = std::env::args().collect();
    for w in argv.windows(2) {
        match w[0].as_str() {
            "--petitions" => a.petitions = w[1].parse().expect("--petitions N"),
            "--concurrency" => a.concurrency = w[1].parse().expect("--concurrency C"),
            _ => {}
        }
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Raw JetStream: `n` acked publishes of `size` bytes, `window` in flight.
async fn raw_publish(nats: &NatsServer, n: usize, size: usize, window: usize) -> f64 {
    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH_RAW".into(),
        subjects: vec!["bench.raw.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("stream");
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let sem = Arc::new(Semaphore::new(window));
    let started = Instant::now();
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let fut = js.publish(format!("bench.raw.{}", i % 1000), payload.clone()).await.expect("publish");
        acks.push(tokio::spawn(async move {
            fut.await.expect("ack");
            drop(permit);
        }));
    }
    join_all(acks).await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// Intake over HTTP: `n` petitions, `c` clients; returns (petitions/s, sorted latencies).
async fn intake_http(base: &str, n: usize, c: usize) -> (f64, Vec<Duration>) {
    let client = xinfang_tests::staff_http(Duration::from_secs(30));
    let url = format!("{base}/v1/petitions");
    // 1000 different petitioners, as at a real bureau (a petitioner's earlier cases are
    // looked up for repeats at every submission)
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..1000).map(|i| serde_json::to_vec(&petition_by(i)).expect("json")).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..c).map(|_| {
        let (client, url, bodies, next) = (client.clone(), url.clone(), bodies.clone(), next.clone());
        tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let body = bodies[i % bodies.len()].clone();
                let t = Instant::now();
                let r =
                    client.post(&url).header("content-type", "application/json").body(body).send().await.expect("send");
                assert_eq!(r.status().as_u16(), 201, "submit failed");
                let _: Value = r.json().await.expect("json");
                lat.push(t.elapsed());
            }
            lat
        })
    });
    let mut all: Vec<Duration> = join_all(workers).await.into_iter().flat_map(|r| r.expect("worker")).collect();
    let rate = n as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

/// Intake and routing as processes: `n` petitions submitted by `c` clients; cases per second
/// from the first submission until the last case has its `routed` event.
async fn routed_end_to_end(nats: &NatsServer, n: usize, c: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml("320211", &nats.url, "")).expect("config");
    let intake = ServiceProcess::start("intake", &config, &nats.url, dir.path());
    let routing = ServiceProcess::start("routing", &config, &nats.url, dir.path());
    let started = Instant::now();
    let _ = intake_http(&intake.http, n, c).await;
    while count_of(nats, "XF_CASES_320211", "xf.320211.case.*.routed").await < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(routing);
    drop(intake);
    rate
}

/// Routing alone on a backlog: `n` petitions registered while routing is down, then routing
/// started; cases per second from its start until the last is routed (the catch-up after an
/// outage, and routing's own rate without intake beside it).
/// On a fresh nats-server with the same fsync setting as `like`.
async fn routing_backlog(like: &NatsServer, n: usize, c: usize, replicas: usize) -> f64 {
    let nats = &NatsServer::start(like.sync_always);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml("320211", &nats.url, "")).expect("config");
    let intake = ServiceProcess::start("intake", &config, &nats.url, dir.path());
    let _ = intake_http(&intake.http, n, c).await;
    drop(intake);
    let started = Instant::now();
    let routing: Vec<ServiceProcess> =
        (0..replicas).map(|_| ServiceProcess::start("routing", &config, &nats.url, dir.path())).collect();
    while count_of(nats, "XF_CASES_320211", "xf.320211.case.*.routed").await < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(routing);
    rate
}

/// Messages of `stream` on subjects matching `filter`.
async fn count_of(nats: &NatsServer, stream: &str, filter: &str) -> usize {
    let js = nats.jetstream().await;
    let stream = js.get_stream(stream).await.expect("stream");
    stream
        .info_with_subjects(filter)
        .await
        .expect("info")
        .try_fold(0usize, |acc, (_, n)| async move { Ok(acc + n) })
        .await
        .expect("subjects")
}

/// Reading one case's history, as every service does per event: through an ephemeral consumer
/// (create, fetch, delete) and with batched direct gets, each over the same `cases` of the
/// node's ledger one at a time; the baseline is one plain consumer reading the whole stream.
/// Returns (events/s of the whole-stream read, consumer reads/s, direct reads/s, events per case).
async fn history_reads(nats: &NatsServer, cases: usize) -> (f64, f64, f64, f64) {
    use std::collections::BTreeSet;
    use xinfang_shared::ids::{CaseId, NodeCode};
    use xinfang_shared::{ledger, subjects};
    let js = nats.jetstream().await;
    let node = NodeCode::parse("320211").expect("node");
    let stream = subjects::case_stream(&node);
    let started = Instant::now();
    let all = ledger::read_stream(&js, &stream, String::new()).await.expect("whole stream");
    let raw = all.len() as f64 / started.elapsed().as_secs_f64();
    let ids: Vec<CaseId> =
        all.iter().map(|s| s.event.case_id.clone()).collect::<BTreeSet<_>>().into_iter().take(cases).collect();
    let started = Instant::now();
    let mut events = 0;
    for case in &ids {
        events += ledger::read_stream(&js, &stream, subjects::case_filter(&node, case)).await.expect("read").len();
    }
    let consumer = ids.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut direct_events = 0;
    for case in &ids {
        direct_events +=
            ledger::read_direct(&js, &stream, &subjects::case_filter(&node, case)).await.expect("read").len();
    }
    let direct = ids.len() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(events, direct_events, "both ways read the same events");
    (raw, consumer, direct, events as f64 / ids.len() as f64)
}

/// Raw sled: `n` inserts of 64-byte values, one flush at the end.
fn raw_sled(n: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let v = [7u8; 64];
    let started = Instant::now();
    for i in 0..n as u64 {
        db.insert(i.to_be_bytes(), &v[..]).expect("insert");
    }
    db.flush().expect("flush");
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let a = args();
    let event_size = serde_json::to_vec(&petition()).expect("json").len() + 600;
    println!("| nats-server fsync | raw JetStream acked publishes/s ({event_size} B, window {}) | intake petitions/s (HTTP, {} clients) | submit p50 ms | submit p99 ms | petitions |", a.concurrency, a.concurrency);
    println!("| --- | --- | --- | --- | --- | --- |");
    for sync_always in [true, false] {
        let nats = NatsServer::start(sync_always);
        let raw = raw_publish(&nats, a.petitions, event_size, a.concurrency).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("node.toml");
        std::fs::write(&config, node_toml("320211", &nats.url, "")).expect("config");
        let intake = ServiceProcess::start("intake", &config, &nats.url, dir.path());
        // warm up connections and buckets
        let _ = intake_http(&intake.http, 200, a.concurrency).await;
        let (rate, lat) = intake_http(&intake.http, a.petitions, a.concurrency).await;
        println!(
            "| {} | {raw:.0} | {rate:.0} | {} | {} | {} |",
            if sync_always { "always (as `xinfang up` runs it)" } else { "default (every 2 min)" },
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            a.petitions
        );
        drop(intake);
    }
    println!();
    println!("| nats-server fsync | raw JetStream acked publishes/s | routed cases/s end to end (submit → `routed` in the ledger) | routing alone on a backlog of as many, cases/s | cases |");
    println!("| --- | --- | --- | --- | --- |");
    let mut reads = None;
    for sync_always in [true, false] {
        let nats = NatsServer::start(sync_always);
        let raw = raw_publish(&nats, a.petitions, event_size, a.concurrency).await;
        let routed = routed_end_to_end(&nats, a.petitions, a.concurrency).await;
        let alone = routing_backlog(&nats, a.petitions, a.concurrency, 1).await;
        let two = routing_backlog(&nats, a.petitions, a.concurrency, 2).await;
        println!("two: {two:.0}");
        println!(
            "| {} | {raw:.0} | {routed:.0} | {alone:.0} | {} |",
            if sync_always { "always" } else { "default" },
            a.petitions
        );
        if !sync_always {
            reads = Some(history_reads(&nats, 1000.min(a.petitions)).await);
        }
    }
    if let Some((raw, consumer, direct, per_case)) = reads {
        println!();
        println!("| raw: one consumer reads the whole ledger, events/s | a case's history through an ephemeral consumer, reads/s | the same with batched direct gets, reads/s | events per case |");
        println!("| --- | --- | --- | --- |");
        println!("| {raw:.0} | {consumer:.0} | {direct:.0} | {per_case:.1} |");
    }
    println!();
    println!("raw sled inserts/s (64 B values, one flush): {:.0}", raw_sled(200_000));
}
