//! `xinfang-bench`: intake throughput and latency next to raw JetStream acked publishes,
//! measured in the same run on the same nats-server (and raw sled inserts for reference).
//!
//! Usage: `xinfang-bench [--petitions N] [--concurrency C]` after
//! `cargo build --release --workspace --bins`. Prints a Markdown report.
//!
//! `xinfang-bench --pipeline [--petitions N] [--concurrency C] [--notification-processes P]`
//! instead measures the whole pipeline on one node — intake → routed → timers armed → notices
//! delivered to a webhook served by the bench — with each stage's throughput and per-case
//! latencies; with P notification processes splitting the cases.
//!
//! `xinfang-bench --city [--petitions N] [--concurrency C]` runs a city of three nodes (each its
//! own nats-server, leaf links) and measures transfers and escalations crossing the links.
//!
//! `xinfang-bench --routed [--fsync-default] [--petitions N] [--concurrency C]`: only the
//! fsync-always (or default) figures of intake and routing, each with what the disk did
//! meanwhile (/proc/diskstats), and the end-to-end run's timeline. `xinfang-bench --paced RATE [--petitions N]`: intake and routing
//! at a steady RATE, submit and registered → routed percentiles; with
//! `XF_BENCH_STAGES=file` it also writes, per case, when each of the two events was created and
//! stored (where a slow case spent its time).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::Value;
use tokio::sync::Semaphore;
use xinfang_tests::{node_toml, petition, petition_by, NatsServer, ServiceProcess};

struct Args {
    petitions: usize,
    concurrency: usize,
    /// Notification processes in the pipeline (`notification.processes`).
    notification: usize,
}

fn args() -> Args {
    let mut a = Args { petitions: 5000, concurrency: 32, notification: 1 };
    let argv: Vec<String> = std::env::args().collect();
    for w in argv.windows(2) {
        match w[0].as_str() {
            "--petitions" => a.petitions = w[1].parse().expect("--petitions N"),
            "--concurrency" => a.concurrency = w[1].parse().expect("--concurrency C"),
            "--notification-processes" => a.notification = w[1].parse().expect("--notification-processes P"),
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

/// Five table cells from two sorted samples: the first's p50 and p99, the second's p50, p99
/// and max (a submit or publish latency, then what followed it).
fn cells(first: &[Duration], then: &[Duration]) -> String {
    format!(
        "{} | {} | {} | {} | {}",
        ms(percentile(first, 0.5)),
        ms(percentile(first, 0.99)),
        ms(percentile(then, 0.5)),
        ms(percentile(then, 0.99)),
        ms(*then.last().expect("a sample"))
    )
}

/// The registered → routed lags of [`paced_node`], sorted.
fn lags_sorted(lags: &[(i64, Duration)]) -> Vec<Duration> {
    let mut v: Vec<Duration> = lags.iter().map(|(_, lag)| *lag).collect();
    v.sort();
    v
}

/// Raw JetStream: `n` acked publishes of `size` bytes, `window` in flight.
async fn raw_publish(nats: &NatsServer, n: usize, size: usize, window: usize) -> f64 {
    raw_publish_on(&nats.jetstream().await, n, size, window).await
}

/// [`raw_publish`] through any JetStream context (a node of the city).
async fn raw_publish_on(js: &async_nats::jetstream::Context, n: usize, size: usize, window: usize) -> f64 {
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
    intake_http_on(&[base.to_string()], n, c).await
}

/// [`intake_http`] with the clients spread over several intake processes.
async fn intake_http_on(bases: &[String], n: usize, c: usize) -> (f64, Vec<Duration>) {
    let client = xinfang_tests::staff_http(Duration::from_secs(30));
    let bodies = bodies();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..c).map(|w| {
        let url = format!("{}/v1/petitions", bases[w % bases.len()]);
        let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
        tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                lat.push(submit(&client, &url, bodies[i % bodies.len()].clone()).await);
            }
            lat
        })
    });
    let mut all: Vec<Duration> = join_all(workers).await.into_iter().flat_map(|r| r.expect("worker")).collect();
    let rate = n as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

/// The bodies submitted: 1000 different petitioners (`XF_BENCH_PETITIONERS` to change it), as
/// at a real bureau (a petitioner's earlier cases are looked up for repeats at every
/// submission).
fn bodies() -> Arc<Vec<Vec<u8>>> {
    let petitioners = std::env::var("XF_BENCH_PETITIONERS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    Arc::new((0..petitioners).map(|i| serde_json::to_vec(&petition_by(i)).expect("json")).collect())
}

/// One submission, request sent → receipt parsed.
async fn submit(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Duration {
    let t = Instant::now();
    let r = client.post(url).header("content-type", "application/json").body(body).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 201, "submit failed");
    let _: Value = r.json().await.expect("json");
    t.elapsed()
}

/// Intake and routing as processes: `n` petitions submitted by `c` clients; cases per second
/// from the first submission until the last case has its `routed` event.
async fn routed_end_to_end(nats: &NatsServer, n: usize, c: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml("320211", &nats.url, "")).expect("config");
    let intake = ServiceProcess::start("intake", &config, &nats.url, dir.path());
    let routing = ServiceProcess::start("routing", &config, &nats.url, dir.path());
    let mut routed = routed_counter(nats).await;
    let started = Instant::now();
    let _ = intake_http(&intake.http, n, c).await;
    routed.reach(n).await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(routing);
    drop(intake);
    rate
}

/// `--routed`: only the fsync-always (`--fsync-default`: default) figures of routing — raw,
/// intake alone, routed end to end (its own raw first) and routing alone on a backlog — each
/// with what the disk did meanwhile (requests, bytes and cache flushes per second, from
/// /proc/diskstats), and the end-to-end run's timeline.
async fn routed_only(n: usize, c: usize) {
    let sync_always = !std::env::args().any(|a| a == "--fsync-default");
    let event_size = serde_json::to_vec(&petition()).expect("json").len() + 600;
    let mut rows = Vec::new();
    let nats = NatsServer::start(sync_always);
    let disk = Disk::now();
    let raw = raw_publish(&nats, n, event_size, c).await;
    rows.push(("raw acked publishes", raw, n, disk.since()));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml("320211", &nats.url, "")).expect("config");
    let intake = ServiceProcess::start("intake", &config, &nats.url, dir.path());
    let _ = intake_http(&intake.http, 200, c).await;
    let disk = Disk::now();
    let (intake_rate, _) = intake_http(&intake.http, n, c).await;
    rows.push(("intake alone, petitions", intake_rate, n, disk.since()));
    drop(intake);
    let nats = NatsServer::start(sync_always);
    let disk = Disk::now();
    let raw_again = raw_publish(&nats, n, event_size, c).await;
    rows.push(("raw acked publishes, again", raw_again, n, disk.since()));
    let disk = Disk::now();
    let routed = routed_end_to_end(&nats, n, c).await;
    rows.push(("routed end to end, cases", routed, 2 * n, disk.since()));
    timeline(&nats).await;
    let disk = Disk::now();
    let alone = routing_backlog(sync_always, n, c, 1).await;
    rows.push(("routing alone on a backlog, cases", alone, n, disk.since()));
    let fsync = if sync_always { "fsync always" } else { "fsync default" };
    println!("| run ({fsync}, {n}, {c} in flight) | per s | ledger appends/s | disk writes/s | disk MB/s | disk flushes/s | KB written per append |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, rate, appends, disk) in rows {
        let appends_per_s = rate * appends as f64 / n as f64;
        match disk {
            Some(d) => println!(
                "| {name} | {rate:.0} | {appends_per_s:.0} | {:.0} | {:.1} | {:.0} | {:.1} |",
                d.writes,
                d.bytes / 1e6,
                d.flushes,
                d.bytes / appends_per_s / 1e3
            ),
            None => println!("| {name} | {rate:.0} | {appends_per_s:.0} | — | — | — | — |"),
        }
    }
    println!("\nrouted end to end ÷ intake alone: {:.0} %", 100.0 * routed / intake_rate);
}

/// The disk's counters (/proc/diskstats, the device under the temporary directory) at a moment.
struct Disk {
    at: Instant,
    counters: Option<[u64; 4]>,
}

/// What the disk did per second between two [`Disk`]s.
struct DiskRates {
    writes: f64,
    bytes: f64,
    flushes: f64,
}

impl Disk {
    fn now() -> Self {
        Disk { at: Instant::now(), counters: disk_counters() }
    }

    fn since(&self) -> Option<DiskRates> {
        let (before, after) = (self.counters?, disk_counters()?);
        let secs = self.at.elapsed().as_secs_f64();
        let per_s = |i: usize| (after[i] - before[i]) as f64 / secs;
        Some(DiskRates { writes: per_s(0), bytes: per_s(1) * 512.0, flushes: per_s(2) })
    }
}

/// Writes completed, sectors written, flushes completed and milliseconds spent flushing, of the
/// device holding the temporary directory (Linux ≥ 5.5; `None` elsewhere).
fn disk_counters() -> Option<[u64; 4]> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(std::env::temp_dir()).ok()?.dev();
    let (major, minor) = (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff), (dev & 0xff) | ((dev >> 12) & !0xff));
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    stats.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 20 || f[0].parse::<u64>().ok()? != major || f[1].parse::<u64>().ok()? != minor {
            return None;
        }
        Some([f[7].parse().ok()?, f[9].parse().ok()?, f[18].parse().ok()?, f[19].parse().ok()?])
    })
}

/// /proc/diskstats sampled every 20 ms on a thread of its own, until stopped.
struct DiskWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(i64, [u64; 4])>>,
}

impl DiskWatch {
    fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(c) = disk_counters() {
                    samples.push((chrono::Utc::now().timestamp_micros(), c));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        DiskWatch { stop, thread }
    }

    /// The samples: (µs since the epoch, [`disk_counters`]).
    fn stop(self) -> Vec<(i64, [u64; 4])> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("disk watch")
    }
}

/// Whether the slow cases of a paced run are the ones that met a slow disk: per 20 ms of the
/// run, the disk's mean time per cache flush (fsync) from `samples`; per case (`lags`:
/// registration µs, registered → routed), the slowest such interval while it was on its way.
fn slow_flushes(samples: &[(i64, [u64; 4])], lags: &[(i64, Duration)]) {
    const SLOW_FLUSH_MS: f64 = 1.0;
    let intervals: Vec<(i64, i64, f64)> = samples
        .windows(2)
        .filter(|w| w[1].1[2] > w[0].1[2])
        .map(|w| (w[0].0, w[1].0, (w[1].1[3] - w[0].1[3]) as f64 / (w[1].1[2] - w[0].1[2]) as f64))
        .collect();
    if intervals.is_empty() {
        return;
    }
    let mut means: Vec<f64> = intervals.iter().map(|i| i.2).collect();
    means.sort_by(f64::total_cmp);
    let worst = |from: i64, lag: Duration| {
        let to = from + lag.as_micros() as i64;
        intervals.iter().filter(|i| i.1 > from && i.0 < to).map(|i| i.2).fold(0.0, f64::max)
    };
    let (slow, fast): (Vec<_>, Vec<_>) = lags.iter().partition(|(_, lag)| *lag > Duration::from_millis(20));
    let met = |cases: &[&(i64, Duration)]| cases.iter().filter(|(at, lag)| worst(*at, *lag) > SLOW_FLUSH_MS).count();
    println!(
        "\nThe disk: mean time per flush over 20 ms intervals: median {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} of {} intervals above {SLOW_FLUSH_MS} ms.",
        means[means.len() / 2],
        means[(means.len() - 1) * 99 / 100],
        means[means.len() - 1],
        means.iter().filter(|m| **m > SLOW_FLUSH_MS).count(),
        means.len()
    );
    println!(
        "Cases slower than 20 ms: {}, of which {} were on their way during such an interval; of the {} faster cases, {}.",
        slow.len(),
        met(&slow),
        fast.len(),
        met(&fast)
    );
}

/// Per 250 ms of the run on `nats` (by the events' own times): how many `registered` and how
/// many `routed` were written — where end to end spends its time.
async fn timeline(nats: &NatsServer) {
    use std::collections::BTreeMap;
    use xinfang_shared::ids::NodeCode;
    use xinfang_shared::{ledger, subjects};
    let node = NodeCode::parse("320211").expect("node");
    let all = ledger::read_stream(&nats.jetstream().await, &subjects::case_stream(&node), String::new())
        .await
        .expect("ledger");
    let Some(first) = all.iter().map(|s| s.event.at).min() else { return };
    let mut slots: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
    for s in &all {
        let slot = (s.event.at - first).num_milliseconds() / 250;
        let e = slots.entry(slot).or_default();
        match s.event.kind.as_str() {
            "registered" => e.0 += 1,
            "routed" => e.1 += 1,
            _ => {}
        }
    }
    println!("| from s | registered | routed |");
    println!("| --- | --- | --- |");
    for (slot, (r, o)) in slots {
        println!("| {:.2} | {r} | {o} |", slot as f64 / 4.0);
    }
    println!();
}

/// Routing alone on a backlog: `n` petitions registered while routing is down, then routing
/// started; cases per second from its start until the last is routed (the catch-up after an
/// outage, and routing's own rate without intake beside it).
/// On a fresh nats-server (fsync always when `sync_always`), with `replicas` routing processes
/// sharing the work.
async fn routing_backlog(sync_always: bool, n: usize, c: usize, processes: usize) -> f64 {
    let nats = &NatsServer::start(sync_always);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml("320211", &nats.url, "")).expect("config");
    let intake = ServiceProcess::start("intake", &config, &nats.url, dir.path());
    let _ = intake_http(&intake.http, n, c).await;
    drop(intake);
    let mut routed = routed_counter(nats).await;
    let started = Instant::now();
    let dirs: Vec<_> = (0..processes).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let routing = replicas("routing", &config, nats, &dirs);
    routed.reach(n).await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(routing);
    rate
}

/// Messages of `stream` on subjects matching `filter`, counted by a consumer that never fetches
/// (its pending count): one small request per poll on one connection. Listing the matching
/// subjects instead made nats-server serialise thousands of entries per poll, on a new
/// connection each time — server CPU taken from the services being measured.
struct Counter {
    consumer: async_nats::jetstream::consumer::PullConsumer,
}

impl Counter {
    async fn new(js: &async_nats::jetstream::Context, stream: &str, filter: &str) -> Self {
        let stream = js.get_stream(stream).await.expect("stream");
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                filter_subject: filter.to_string(),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(600),
                ..Default::default()
            })
            .await
            .expect("counting consumer");
        Counter { consumer }
    }

    async fn count(&mut self) -> usize {
        self.consumer.info().await.expect("consumer info").num_pending as usize
    }

    /// Waits until `n` are there, polling every 20 ms.
    async fn reach(&mut self, n: usize) {
        while self.count().await < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A [`Counter`] of the routed cases of 320211 on `nats`.
async fn routed_counter(nats: &NatsServer) -> Counter {
    Counter::new(&nats.jetstream().await, "XF_CASES_320211", "xf.320211.case.*.routed").await
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

/// One process of service `name` per directory in `dirs`, on one node: the first as usual,
/// the others as replicas `2`, `3` … (`store.replica`), each with its own store.
fn replicas(
    name: &str,
    config: &std::path::Path,
    nats: &NatsServer,
    dirs: &[tempfile::TempDir],
) -> Vec<ServiceProcess> {
    dirs.iter()
        .enumerate()
        .map(|(i, d)| {
            let replica = if i == 0 { String::new() } else { format!("{}", i + 1) };
            ServiceProcess::start_replica(name, config, &nats.url, d.path(), &replica)
        })
        .collect()
}

/// Intake as `processes` processes on a fresh nats-server (fsync always), with its own raw
/// baseline first: (raw publishes/s, petitions/s).
async fn intake_replicas(n: usize, c: usize, processes: usize, event_size: usize) -> (f64, f64) {
    let nats = NatsServer::start(true);
    let raw = raw_publish(&nats, n, event_size, c).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml("320211", &nats.url, "")).expect("config");
    let dirs: Vec<_> = (0..processes).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let processes = replicas("intake", &config, &nats, &dirs);
    let bases: Vec<String> = processes.iter().map(|p| p.http.clone()).collect();
    let _ = intake_http_on(&bases, 200, c).await;
    let (rate, _) = intake_http_on(&bases, n, c).await;
    (raw, rate)
}

/// Submissions at a steady `rate` per second (each on its own task, whatever the answers
/// take: an open loop, as a hotline's traffic arrives); returns the sorted latencies.
async fn paced(base: &str, n: usize, rate: f64) -> Vec<Duration> {
    let client = xinfang_tests::staff_http(Duration::from_secs(30));
    let url = format!("{base}/v1/petitions");
    let bodies = bodies();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        ticks.tick().await;
        let (client, url, body) = (client.clone(), url.clone(), bodies[i % bodies.len()].clone());
        tasks.push(tokio::spawn(async move { submit(&client, &url, body).await }));
    }
    let mut all: Vec<Duration> = join_all(tasks).await.into_iter().map(|r| r.expect("task")).collect();
    all.sort();
    all
}

/// The raw baseline of a paced run: on a fresh nats-server with fsync always, `n` acked
/// publishes of `size` bytes at a steady `rate` (each on its own task) to new subjects of a
/// ledger-shaped stream (the node's own, `ledger::provision`) with one consumer receiving them.
/// Returns the publishes' latencies and, per message, stream timestamp → receipt by the
/// consumer, both sorted.
async fn raw_paced(n: usize, rate: f64, size: usize) -> (Vec<Duration>, Vec<Duration>) {
    use futures::StreamExt;
    use xinfang_shared::ids::NodeCode;
    use xinfang_shared::{ledger, subjects};
    let nats = NatsServer::start(true);
    let js = nats.jetstream().await;
    let node = NodeCode::parse("320211").expect("node");
    ledger::provision(&js, &node, 1).await.expect("streams");
    let stream = js.get_stream(subjects::case_stream(&node)).await.expect("stream");
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let receiver = tokio::spawn(async move {
        let mut messages = consumer.stream().max_messages_per_batch(256).messages().await.expect("messages");
        let mut lags = Vec::with_capacity(n);
        while lags.len() < n {
            let m = messages.next().await.expect("message").expect("message");
            let stored = m.info().expect("info").published.unix_timestamp_nanos() as i64;
            let now = chrono::Utc::now().timestamp_nanos_opt().expect("now");
            lags.push(Duration::from_nanos((now - stored).max(0) as u64));
            let _ = m.ack().await;
        }
        lags
    });
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut appends = Vec::with_capacity(n);
    for i in 0..n {
        ticks.tick().await;
        let (js, payload) = (js.clone(), payload.clone());
        appends.push(tokio::spawn(async move {
            let t = Instant::now();
            let headers = ledger::headers(&format!("01BENCH{i:08}"), "registered");
            let subject = format!("xf.320211.case.320211-20261203-{i:06}.registered");
            js.publish_with_headers(subject, headers, payload).await.expect("publish").await.expect("ack");
            t.elapsed()
        }));
    }
    let mut append: Vec<Duration> = join_all(appends).await.into_iter().map(|r| r.expect("append")).collect();
    let mut lags = receiver.await.expect("receiver");
    append.sort();
    lags.sort();
    (append, lags)
}

/// Intake (and routing, when `with_routing`) running on a fresh nats-server with fsync
/// always, `n` petitions at a steady `rate` after 200 to warm up: the submit latencies, sorted,
/// and, with routing, per case its registration (µs since the epoch) and registered → routed
/// (the two events' own times), in ledger order.
async fn paced_node(n: usize, rate: f64, with_routing: bool) -> (Vec<Duration>, Vec<(i64, Duration)>) {
    use std::collections::HashMap;
    use xinfang_shared::ids::NodeCode;
    use xinfang_shared::{ledger, subjects};
    const WARM: usize = 200;
    let nats = NatsServer::start(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml("320211", &nats.url, "")).expect("config");
    let intake = ServiceProcess::start("intake", &config, &nats.url, dir.path());
    let routing = with_routing.then(|| ServiceProcess::start("routing", &config, &nats.url, dir.path()));
    let _ = paced(&intake.http, WARM, rate).await;
    let submits = paced(&intake.http, n, rate).await;
    if routing.is_none() {
        return (submits, Vec::new());
    }
    routed_counter(&nats).await.reach(n + WARM).await;
    drop(routing);
    drop(intake);
    let js = nats.jetstream().await;
    let node = NodeCode::parse("320211").expect("node");
    let all = ledger::read_stream(&js, &subjects::case_stream(&node), String::new()).await.expect("ledger");
    if let Ok(path) = std::env::var("XF_BENCH_STAGES") {
        stages(&js, &all, &path).await;
    }
    let mut registered = HashMap::new();
    let mut lags = Vec::new();
    for s in &all {
        match s.event.kind.as_str() {
            "registered" => {
                let order = registered.len();
                registered.insert(s.event.case_id.clone(), (order, s.event.at));
            }
            "routed" => match registered.get(&s.event.case_id) {
                Some((order, at)) if *order >= WARM => {
                    lags.push((at.timestamp_micros(), (s.event.at - *at).to_std().unwrap_or_default()))
                }
                _ => {}
            },
            _ => {}
        }
    }
    (submits, lags)
}

/// Diagnostics (`XF_BENCH_STAGES=file`): per routed case, in µs since the epoch, the
/// `registered` event's own time, when the stream stored it, the `routed` event's own time and
/// when the stream stored that; then the case and the `registered` event's stream sequence.
async fn stages(js: &async_nats::jetstream::Context, all: &[xinfang_shared::ledger::Stored], path: &str) {
    use futures::StreamExt;
    use std::collections::HashMap;
    use std::io::Write;
    let stream = js.get_stream("XF_CASES_320211").await.expect("stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut stored = HashMap::new();
    while stored.len() < all.len() {
        let m = messages.next().await.expect("message").expect("message");
        let info = m.info().expect("info");
        stored.insert(info.stream_sequence, (info.published.unix_timestamp_nanos() / 1000) as i64);
    }
    let mut registered = HashMap::new();
    let mut f = std::fs::File::create(path).expect("stages file");
    for s in all {
        match s.event.kind.as_str() {
            "registered" => {
                registered.insert(s.event.case_id.clone(), (s.event.at.timestamp_micros(), stored[&s.seq], s.seq));
            }
            "routed" => {
                if let Some((at, at_stored, seq)) = registered.get(&s.event.case_id) {
                    let (routed_at, case) = (s.event.at.timestamp_micros(), &s.event.case_id);
                    writeln!(f, "{at} {at_stored} {routed_at} {} {case} {seq}", stored[&s.seq]).expect("write");
                }
            }
            _ => {}
        }
    }
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

/// A stage's cell: how long until all `of` were done, and the rate; or that they were not.
fn completed(d: Option<Duration>, of: usize) -> String {
    d.map_or("not all within 10 min".to_string(), |d| {
        format!("{:.1} s ({:.0}/s)", d.as_secs_f64(), of as f64 / d.as_secs_f64())
    })
}

/// What the webhook receiver saw: per notice, its template, case and arrival (Unix ns).
#[derive(Default)]
struct Hook {
    seen: std::sync::Mutex<Vec<(String, String, i128)>>,
}

async fn hook(
    axum::extract::State(h): axum::extract::State<Arc<Hook>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::http::StatusCode {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as i128;
    let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    h.seen.lock().expect("hook").push((field("template"), field("case_id"), now));
    axum::http::StatusCode::OK
}

/// The armed-timer gauge of deadlines, summed over steps.
async fn armed_timers(metrics: &str) -> f64 {
    let Ok(r) = reqwest::get(format!("{metrics}/metrics")).await else { return 0.0 };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("xf_deadlines_armed_timers{"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// The whole pipeline on one node (nats-server with fsync always; intake, routing, deadlines
/// and `p` notification processes; notices to a webhook served here): `n` petitions from `c`
/// clients. Reports when each stage had all `n` cases, and per case the latencies between
/// stages (ledger times of the events, arrival times at the webhook).
async fn pipeline(n: usize, c: usize, p: usize) {
    use std::collections::HashMap;
    use xinfang_shared::ids::NodeCode;
    use xinfang_shared::{ledger, subjects};
    let receiver = Arc::new(Hook::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

    let nats = NatsServer::start(true);
    let raw = raw_publish(&nats, n, serde_json::to_vec(&petition()).expect("json").len() + 600, c).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    let extra = format!("\n[notification]\nwebhook_url = \"http://127.0.0.1:{port}/hook\"\nprocesses = {p}\n");
    std::fs::write(&config, node_toml("320211", &nats.url, &extra)).expect("config");
    let mut services: Vec<ServiceProcess> = ["intake", "routing", "deadlines", "notification"]
        .iter()
        .map(|s| ServiceProcess::start(s, &config, &nats.url, dir.path()))
        .collect();
    for k in 2..=p {
        let own = dir.path().join(format!("notification-{k}"));
        services.push(ServiceProcess::start_replica("notification", &config, &nats.url, &own, &k.to_string()));
    }
    let (intake, deadlines) = (&services[0], &services[2]);
    let mut routed_count = routed_counter(&nats).await;
    let started = Instant::now();
    let (_, submits) = intake_http(&intake.http, n, c).await;
    let submitted = started.elapsed();
    // each stage's completion, polled every 50 ms
    let (mut routed_at, mut armed_at, mut receipts_at, mut assignments_at) = (None, None, None, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while (routed_at.is_none() || armed_at.is_none() || receipts_at.is_none() || assignments_at.is_none())
        && Instant::now() < deadline
    {
        if routed_at.is_none() && routed_count.count().await >= n {
            routed_at = Some(started.elapsed());
        }
        if armed_at.is_none() && routed_at.is_some() && armed_timers(&deadlines.http).await >= n as f64 {
            armed_at = Some(started.elapsed());
        }
        let (receipts, assignments) = {
            let seen = receiver.seen.lock().expect("hook");
            let count = |t: &str| seen.iter().filter(|(template, _, _)| template == t).count();
            (count("receipt"), count("assignment"))
        };
        if receipts_at.is_none() && receipts >= n {
            receipts_at = Some(started.elapsed());
        }
        if assignments_at.is_none() && assignments >= n {
            assignments_at = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(services);
    // per case, from the ledger's event times and the webhook's arrival times
    let js = nats.jetstream().await;
    let node = NodeCode::parse("320211").expect("node");
    let all = ledger::read_stream(&js, &subjects::case_stream(&node), String::new()).await.expect("ledger");
    let ns = |t: xinfang_shared::time::Instant| t.timestamp_nanos_opt().unwrap_or_default() as i128;
    let (mut registered, mut routed) = (HashMap::new(), HashMap::new());
    for s in &all {
        match s.event.kind.as_str() {
            "registered" => {
                registered.insert(s.event.case_id.to_string(), ns(s.event.at));
            }
            "routed" => {
                routed.insert(s.event.case_id.to_string(), ns(s.event.at));
            }
            _ => {}
        }
    }
    let sorted = |mut v: Vec<Duration>| {
        v.sort();
        v
    };
    let span = |from: i128, to: i128| Duration::from_nanos((to - from).max(0) as u64);
    let to_routed = sorted(registered.iter().filter_map(|(c, r)| Some(span(*r, *routed.get(c)?))).collect());
    let seen = receiver.seen.lock().expect("hook").clone();
    let delivered = |template: &str, from: &HashMap<String, i128>| {
        sorted(
            seen.iter()
                .filter(|(t, _, _)| t == template)
                .filter_map(|(_, c, at)| Some(span(*from.get(c)?, *at)))
                .collect(),
        )
    };
    let receipt = delivered("receipt", &registered);
    let assignment = delivered("assignment", &routed);
    let rate = |d: Option<Duration>| completed(d, n);
    let row = |name: &str, v: &[Duration]| {
        if v.is_empty() {
            println!("| {name} | — | — | — | — |");
        } else {
            println!(
                "| {name} | {} | {} | {} | {} |",
                v.len(),
                ms(percentile(v, 0.5)),
                ms(percentile(v, 0.99)),
                ms(v[v.len() - 1])
            );
        }
    };
    println!(
        "\nThe pipeline: {n} petitions, {c} clients, {p} notification process(es), fsync always; raw acked publishes on the same server {raw:.0}/s.\n"
    );
    println!("| stage complete for all {n} cases | since the first submission |");
    println!("| --- | --- |");
    println!("| submitted (intake answered) | {} |", rate(Some(submitted)));
    println!("| routed (ledger) | {} |", rate(routed_at));
    println!("| timers armed (deadlines' gauge: one acceptance timer per case) | {} |", rate(armed_at));
    println!("| receipts delivered to the webhook | {} |", rate(receipts_at));
    println!("| assignments delivered to the webhook | {} |", rate(assignments_at));
    println!();
    println!("| per case | cases | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    row("submit (request → receipt)", &submits);
    row("registered → routed (event times)", &to_routed);
    row("registered → receipt at the webhook", &receipt);
    row("routed → assignment at the webhook", &assignment);
}

/// A city (hub 320200, districts 320211 and 320213, each `xinfang up` with its own nats-server,
/// the districts' leaf links through proxies): `n` petitions submitted to 320211 by `c` clients,
/// a third located in 320213 (forwarded there: `transferred_in` in 320213's ledger), a third
/// group petitions (escalated to the city at once: in the hub's `XF_INBOX_320200`), a third its
/// own. Reports when all of each had crossed, and per transfer `forwarded` → `transferred_in`
/// (the two events' own times).
async fn city(n: usize, c: usize) {
    use std::collections::HashMap;
    use xinfang_shared::ids::NodeCode;
    use xinfang_shared::{ledger, subjects};
    use xinfang_tests::topology::{parent_connected, wait_until, City};
    let dir = tempfile::tempdir().expect("tempdir");
    let town = City::start(dir.path(), "").await;
    let http = xinfang_tests::staff_http(Duration::from_secs(30));
    for d in &town.districts {
        wait_until(Duration::from_secs(60), "leaf link up", || parent_connected(&http, d)).await;
    }
    let (hub, binhu, liangxi) =
        (town.jetstream("320200").await, town.jetstream("320211").await, town.jetstream("320213").await);
    let raw = raw_publish_on(&binhu, n, serde_json::to_vec(&petition()).expect("json").len() + 600, c).await;
    binhu.delete_stream("BENCH_RAW").await.expect("delete");
    let url = format!("{}/v1/petitions", town.districts[0].http());
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut p = petition_by(i as u32);
            match i % 3 {
                0 => p["location"] = serde_json::json!({"division": "320213", "address": "梁溪区崇安寺"}),
                1 => p["headcount"] = serde_json::json!(6),
                _ => {}
            }
            serde_json::to_vec(&p).expect("json")
        })
        .collect();
    // i % 3 == 0 are transfers, i % 3 == 1 group petitions
    let (transfers, groups) = (n.div_ceil(3), (n + 1) / 3);
    let mut arrivals = Counter::new(&liangxi, "XF_CASES_320213", "xf.320213.case.*.transferred_in").await;
    let escalation = format!("xf.320211.out.320200.{}", xinfang_shared::escalation::ESCALATION);
    let mut escalations = Counter::new(&hub, "XF_INBOX_320200", &escalation).await;
    let sem = Arc::new(Semaphore::new(c));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for body in bodies {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let _ = submit(&http, &url, body).await;
            drop(permit);
        }));
    }
    join_all(tasks).await;
    let submitted = started.elapsed();
    let (mut arrived_at, mut escalated_at) = (None, None);
    let limit = Instant::now() + Duration::from_secs(600);
    while (arrived_at.is_none() || escalated_at.is_none()) && Instant::now() < limit {
        if arrived_at.is_none() && arrivals.count().await >= transfers {
            arrived_at = Some(started.elapsed());
        }
        if escalated_at.is_none() && escalations.count().await >= groups {
            escalated_at = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let times = |js: &async_nats::jetstream::Context, node: &str, kind: &str| {
        let (js, node, kind) = (js.clone(), NodeCode::parse(node).expect("node"), kind.to_string());
        async move {
            let filter = format!("xf.{node}.case.*.{kind}");
            let all = ledger::read_stream(&js, &subjects::case_stream(&node), filter).await.expect("ledger");
            all.into_iter().map(|s| (s.event.case_id.to_string(), s.event.at)).collect::<HashMap<_, _>>()
        }
    };
    let forwarded = times(&binhu, "320211", "forwarded").await;
    let arrived = times(&liangxi, "320213", "transferred_in").await;
    let mut lags: Vec<Duration> =
        forwarded.iter().filter_map(|(case, at)| (*arrived.get(case)? - *at).to_std().ok()).collect();
    lags.sort();
    println!(
        "\nThe city: {n} petitions to 320211 from {c} clients; raw acked publishes on 320211's server {raw:.0}/s.\n"
    );
    println!("| complete | since the first submission |");
    println!("| --- | --- |");
    println!("| all {n} submitted (intake answered) | {} |", completed(Some(submitted), n));
    println!(
        "| all {transfers} transfers in 320213's ledger (`transferred_in`) | {} |",
        completed(arrived_at, transfers)
    );
    println!("| all {groups} escalations in the city's inbox | {} |", completed(escalated_at, groups));
    if !lags.is_empty() {
        println!(
            "\nPer transfer, `forwarded` (320211) → `transferred_in` (320213): {} cases, p50 {} ms, p99 {} ms, max {} ms.",
            lags.len(),
            ms(percentile(&lags, 0.5)),
            ms(percentile(&lags, 0.99)),
            ms(lags[lags.len() - 1])
        );
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    if std::env::args().any(|a| a == "--pipeline") {
        pipeline(a.petitions, a.concurrency, a.notification).await;
        return;
    }
    if std::env::args().any(|a| a == "--city") {
        city(a.petitions, a.concurrency).await;
        return;
    }
    let argv: Vec<String> = std::env::args().collect();
    if let Some(rate) = argv.windows(2).find(|w| w[0] == "--paced").map(|w| w[1].parse::<f64>().expect("--paced RATE"))
    {
        let watch = DiskWatch::start();
        let (submits, lags) = paced_node(a.petitions, rate, true).await;
        let samples = watch.stop();
        println!("| offered/s | submit p50 ms | p99 ms | registered → routed p50 ms | p99 ms | max ms |");
        println!("| --- | --- | --- | --- | --- | --- |");
        println!("| {rate:.0} | {} |", cells(&submits, &lags_sorted(&lags)));
        slow_flushes(&samples, &lags);
        return;
    }
    if std::env::args().any(|a| a == "--routed") {
        routed_only(a.petitions, a.concurrency).await;
        return;
    }
    let event_size = serde_json::to_vec(&petition()).expect("json").len() + 600;
    println!("| nats-server fsync | raw JetStream acked publishes/s ({event_size} B, window {}) | intake petitions/s (HTTP, {} clients) | submit p50 ms | submit p99 ms | petitions |", a.concurrency, a.concurrency);
    println!("| --- | --- | --- | --- | --- | --- |");
    let (mut intake_rate, mut routed_rate) = (0.0, 0.0);
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
        if sync_always {
            intake_rate = rate;
        }
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
        let alone = routing_backlog(sync_always, a.petitions, a.concurrency, 1).await;
        if sync_always {
            routed_rate = routed;
        }
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
    println!("At half load (fsync always, a steady rate, each on a fresh nats-server):");
    println!();
    println!("| load | petitions/s offered (raw: publishes/s) | submit p50 ms (raw: publish) | submit p99 ms (raw: publish) | registered → routed p50 ms (raw: stored → received) | p99 ms | max ms | petitions |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let half = intake_rate / 2.0;
    let raw_row = |what: &str, rate: f64, (append, delivery): (Vec<Duration>, Vec<Duration>)| {
        println!(
            "| raw: acked publishes at {what}, one consumer receiving | {rate:.0} | {} | {} |",
            cells(&append, &delivery),
            a.petitions
        )
    };
    raw_row("intake's half load", half, raw_paced(a.petitions, half, event_size).await);
    let (submits, _) = paced_node(a.petitions, half, false).await;
    println!(
        "| half of intake's rate above, intake alone | {half:.0} | {} | {} | — | — | — | {} |",
        ms(percentile(&submits, 0.5)),
        ms(percentile(&submits, 0.99)),
        a.petitions
    );
    let half = routed_rate / 2.0;
    raw_row(
        "twice the routed half load (two appends a case)",
        2.0 * half,
        raw_paced(2 * a.petitions, 2.0 * half, event_size).await,
    );
    let (submits, lags) = paced_node(a.petitions, half, true).await;
    println!(
        "| half of the routed rate above, intake and routing | {half:.0} | {} | {} |",
        cells(&submits, &lags_sorted(&lags)),
        a.petitions
    );
    println!();
    println!("Replicas (fsync always; each row on fresh nats-servers, its raw baseline measured first):");
    println!();
    println!("| processes | raw JetStream acked publishes/s | intake petitions/s ({} clients spread over them) | intake / raw | routing alone on a backlog, cases/s | routing / raw |", a.concurrency);
    println!("| --- | --- | --- | --- | --- | --- |");
    for replicas in [1, 2, 4] {
        let (raw, rate) = intake_replicas(a.petitions, a.concurrency, replicas, event_size).await;
        let routing = routing_backlog(true, a.petitions, a.concurrency, replicas).await;
        println!(
            "| {replicas} | {raw:.0} | {rate:.0} | {:.0} % | {routing:.0} | {:.0} % |",
            100.0 * rate / raw,
            100.0 * routing / raw
        );
    }
    println!();
    println!("raw sled inserts/s (64 B values, one flush): {:.0}", raw_sled(200_000));
}
