//! `xinfang-bench-timers`: the deadlines service's timer store at scale, next to raw sled
//! inserts measured in the same run.
//!
//! 1. Raw sled: one plain insert per timer of a timer record's key and value sizes, one flush.
//! 2. Arm `--timers N` (default 1,000,000) timers with the service's own code
//!    (`timers::arm_stored`, one projection write per case as on a ledger event: the record,
//!    then the ledger position): N − B due in the coming weeks (with warnings), B (`--burst`,
//!    default 100,000) due at the same second. With `--organ`, each record names an organ.
//! 3. Start `xinfang-deadlines` on that store (a real process and nats-server), SIGKILL it,
//!    start it again: recovery = spawn → ready line.
//! 4. Firing lag of the burst, from the ledger: JetStream's stored time of each
//!    `deadline_breached` minus its due second; p50 / p99 / max. Peak RSS of the service
//!    (VmHWM) at the end.
//!
//! The floor under the lag, on the same server before and after the burst: the burst's
//! messages (same subjects, headers and bytes, on a `bench.` stream) as one fast-ingest batch
//! from this process, with each message's stored time minus the batch's start.
//!
//! Usage: `xinfang-bench-timers [--timers N] [--burst B]` after
//! `cargo build --release --workspace --bins`. Prints a Markdown report.

use std::time::{Duration, Instant};

use futures::StreamExt;
use xinfang_deadlines::render::Renderer;
use xinfang_deadlines::timers::{arm_stored, firing_id, open_store, Armed, Kind};
use xinfang_shared::event::Step;
use xinfang_shared::fast_ingest::FastBatch;
use xinfang_shared::ids::NodeCode;
use xinfang_shared::ledger::{headers, APPEND_WINDOW};
use xinfang_shared::time::now_cst;
use xinfang_tests::{bench_arg as arg, bench_case as case, node_toml, NatsServer, ServiceProcess};

/// Raw sled: `n` inserts of keys and values the size of a timer record's (`value` bytes), one
/// flush.
fn raw_sled(n: usize, value: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let v = vec![7u8; value];
    let started = Instant::now();
    for i in 0..n {
        db.insert(format!("a/{}/x", case(i)), &v[..]).expect("insert");
    }
    db.flush().expect("flush");
    n as f64 / started.elapsed().as_secs_f64()
}

fn vm_hwm_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let n = arg("--timers", 1_000_000);
    let burst = arg("--burst", 100_000).min(n);
    let dir = tempfile::tempdir().expect("tempdir");

    let organ = std::env::args().any(|a| a == "--organ").then(|| "320211-zjj".to_string());
    let value = Armed::new(now_cst(), now_cst(), false, organ.clone()).encode().len();
    let raw = raw_sled(n, value);

    let (store, _) = open_store(&dir.path().join("deadlines")).expect("store");
    let now = now_cst();
    let started = Instant::now();
    let mut due_burst = now;
    for i in 0..n {
        let armed = if i < n - burst {
            let due =
                now + chrono::Duration::days(10 + (i % 20) as i64) + chrono::Duration::seconds((i % 86_400) as i64);
            Armed::new(due, due - chrono::Duration::days(3), false, organ.clone())
        } else {
            if i == n - burst {
                // the burst is due on a whole second after the service has been started, killed
                // and restarted (at most ~40 s from here)
                let at = now + chrono::Duration::seconds(started.elapsed().as_secs() as i64 + 40);
                due_burst = at - chrono::Duration::nanoseconds(at.timestamp_subsec_nanos() as i64);
            }
            Armed::new(due_burst, due_burst, false, organ.clone())
        };
        arm_stored(&store, i as u64 + 1, &case(i), Step::Acceptance, &armed).await.expect("arm");
    }
    store.flush().await.expect("flush");
    let arm_secs = started.elapsed().as_secs_f64();
    drop(store);
    let size_mb = dir_size(&dir.path().join("deadlines")) as f64 / 1e6;

    let nats = NatsServer::start(false);
    let (raw_js_secs, event_size) = raw_burst(&nats, burst).await;
    let raw_fast = raw_fast_burst(&nats, burst).await;
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml("320211", &nats.url, "")).expect("config");
    let t = Instant::now();
    let mut service = ServiceProcess::start("deadlines", &config, &nats.url, dir.path());
    let first_start = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    service.restart(); // SIGKILL, then start on the same store
    let recovery = t.elapsed().as_secs_f64();
    let until_due = (due_burst - now_cst()).num_milliseconds();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_started = vm_hwm_mb(service.child.id());

    // the burst, as stored in the ledger (read once it is all there, so the reading does not
    // compete with the firing for the two cores)
    let js = nats.jetstream().await;
    let mut stream = js.get_stream("XF_CASES_320211").await.expect("ledger stream");
    tokio::time::sleep(Duration::from_millis(until_due.max(0) as u64).saturating_sub(Duration::from_secs(3))).await;
    let wait_end = Instant::now() + Duration::from_secs(120);
    while stream.info().await.expect("stream info").state.messages < burst as u64 && Instant::now() < wait_end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let due_ns = due_burst.timestamp_nanos_opt().expect("in range") as i128;
    let lags = stored_lags(&js, "XF_CASES_320211", "xf.320211.case.*.deadline_breached", burst, due_ns).await;
    let rss = vm_hwm_mb(service.child.id());
    drop(service);
    assert_eq!(lags.len(), burst, "every timer of the burst fired");
    // the floor again, right after the burst: this machine's speed drifts within a run
    let raw_after = raw_fast_burst(&nats, burst).await;

    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| raw sled inserts/s (a timer record's key and value sizes, {n} inserts, one flush) | {raw:.0} |");
    println!(
        "| raw JetStream: {burst} acked publishes shaped like the burst's ({event_size} B, the ledger's three headers), {APPEND_WINDOW} in flight, same server | {raw_js_secs:.2} s ({:.0}/s) |",
        burst as f64 / raw_js_secs
    );
    println!("| raw JetStream: the same as one fast-ingest batch (ADR-50), same server | {} |", raw_fast.row(burst));
    println!("| raw JetStream: the same fast-ingest batch again, right after the burst | {} |", raw_after.row(burst));
    println!("| timers armed | {n} ({burst} due at the same second) |");
    println!(
        "| arm rate, timers/s (one record and the ledger position per timer{}) | {:.0} ({:.0} % of raw inserts) |",
        if organ.is_some() { ", organ named" } else { "" },
        n as f64 / arm_secs,
        100.0 * n as f64 / arm_secs / raw
    );
    println!("| store on disk | {size_mb:.0} MB ({:.0} B per timer) |", size_mb * 1e6 / n as f64);
    println!("| first start on the full store, spawn → ready | {first_start:.2} s |");
    println!("| recovery after SIGKILL, spawn → ready | {recovery:.2} s |");
    println!(
        "| burst due {:.1} s after recovery | firing lag p50 {:.3} s, p99 {:.3} s, max {:.3} s |",
        until_due as f64 / 1000.0,
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags[lags.len() - 1]
    );
    println!("| peak RSS of xinfang-deadlines (VmHWM) | {rss:.0} MB ({rss_started:.0} MB 3 s after its restart) |");
}

/// Firing `i` of a burst as the service sends it: subject, the ledger's headers and the bytes
/// of its `deadline_breached` (on a `bench.` subject, outside the ledger).
fn firing(
    i: usize,
    renderer: &mut Renderer,
    due: xinfang_shared::time::Instant,
) -> (String, async_nats::HeaderMap, bytes::Bytes) {
    let case = case(i);
    let id = firing_id(case.as_str(), "acceptance", due, "breached");
    let payload = renderer.deadline(&id, &case, Kind::Breached, Step::Acceptance, due, false);
    (format!("bench.320211.case.{case}.deadline_breached"), headers(&id, "deadline_breached"), payload.into())
}

/// Raw JetStream on the same server, the floor under the burst's lag: `n` acked publishes
/// shaped like the burst's, [`APPEND_WINDOW`] in flight. Returns (seconds, bytes per message).
async fn raw_burst(nats: &NatsServer, n: usize) -> (f64, usize) {
    let js = bench_stream(nats, "BENCH_RAW", false).await;
    let node = NodeCode::parse("320211").expect("node");
    let mut renderer = Renderer::new(&node, now_cst());
    let due = now_cst();
    let messages: Vec<_> = (0..n).map(|i| firing(i, &mut renderer, due)).collect();
    let size = messages[0].2.len();
    let started = Instant::now();
    for chunk in messages.chunks(APPEND_WINDOW) {
        let acks = chunk.iter().cloned().map(|(subject, headers, payload)| {
            let js = js.clone();
            async move {
                js.publish_with_headers(subject, headers, payload).await.expect("publish").await.expect("ack");
            }
        });
        futures::future::join_all(acks).await;
    }
    let secs = started.elapsed().as_secs_f64();
    js.delete_stream("BENCH_RAW").await.expect("delete");
    (secs, size)
}

/// The fast-ingest floor: seconds for the whole batch, and each message's stored time minus
/// the batch's start, sorted (the raw counterpart of the firing lag).
struct RawFast {
    secs: f64,
    lags: Vec<f64>,
}

impl RawFast {
    /// The report's value cell for a batch of `n`.
    fn row(&self, n: usize) -> String {
        format!(
            "{:.2} s ({:.0}/s); stored − start p50 {:.3} s, p99 {:.3} s",
            self.secs,
            n as f64 / self.secs,
            percentile(&self.lags, 0.5),
            percentile(&self.lags, 0.99)
        )
    }
}

/// Raw JetStream, the way the service fires: the same `n` messages as one fast-ingest batch
/// on a stream that allows it, rendered as they are sent (as the service renders them).
async fn raw_fast_burst(nats: &NatsServer, n: usize) -> RawFast {
    let js = bench_stream(nats, "BENCH_FAST", true).await;
    let node = NodeCode::parse("320211").expect("node");
    let due = now_cst();
    let mut renderer = Renderer::new(&node, due);
    let start_ns = chrono::Utc::now().timestamp_nanos_opt().expect("in range") as i128;
    let started = Instant::now();
    let mut batch = FastBatch::open(&js.client(), 500, Duration::from_secs(10)).await.expect("batch");
    for i in 0..n {
        let (subject, headers, payload) = firing(i, &mut renderer, due);
        batch.add(subject.into(), headers, payload).await.expect("add");
    }
    assert_eq!(batch.finish().await.expect("finish"), n as u64);
    let secs = started.elapsed().as_secs_f64();
    let lags = stored_lags(&js, "BENCH_FAST", "bench.>", n, start_ns).await;
    js.delete_stream("BENCH_FAST").await.expect("delete");
    RawFast { secs, lags }
}

/// JetStream's stored time of each of the `n` messages under `filter`, minus `since_ns`
/// (Unix nanoseconds), in seconds, sorted.
async fn stored_lags(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
    n: usize,
    since_ns: i128,
) -> Vec<f64> {
    let stream = js.get_stream(stream).await.expect("stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.into(),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut lags = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(60);
    while lags.len() < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            Ok(Some(Ok(m))) => {
                let info = m.info().expect("jetstream message");
                lags.push((info.published.unix_timestamp_nanos() - since_ns) as f64 / 1e9);
            }
            Ok(Some(Err(e))) => panic!("reading {filter}: {e}"),
            Ok(None) => break,
            Err(_) => continue,
        }
    }
    lags.sort_by(f64::total_cmp);
    lags
}

/// A file stream like the ledger (one-hour duplicate window, `bench.>`), with or without
/// fast-ingest batches.
async fn bench_stream(nats: &NatsServer, name: &str, batched: bool) -> async_nats::jetstream::Context {
    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec!["bench.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(3600),
        allow_batch_publish: batched,
        ..Default::default()
    })
    .await
    .expect("stream");
    js
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
