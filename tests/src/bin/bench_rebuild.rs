//! `xinfang-bench-rebuild`: a lost deadlines store rebuilt from a ledger of `--events N`
//! (default 1,000,000), next to a plain consumer reading the same stream in the same run.
//!
//! 1. A fresh nats-server; the ledger of 320211 filled with N events: cases registered,
//!    routed, accepted and replied (four events each, on time, so each ends with its
//!    petitioner's review window armed), appended as fast-ingest batches.
//! 2. Raw: one plain consumer (ephemeral, no acks, memory state) reads every case event of the
//!    stream, before and after the rebuild.
//! 3. `xinfang-deadlines` starts on an empty store (a lost one), rebuilds it in one read of the
//!    ledger, then prints its ready line: spawn → ready, and the service's own read and replay
//!    seconds from its log.
//!
//! Usage: `xinfang-bench-rebuild [--events N]` after `cargo build --release --workspace --bins`.
//! Prints a Markdown report.

use std::time::Instant;

use xinfang_shared::event::{EventData, Outcome};
use xinfang_shared::fixtures;
use xinfang_shared::ids::{NodeCode, OrganId};
use xinfang_shared::ledger::{self, Ledger};
use xinfang_shared::subjects;
use xinfang_shared::time::now_cst;
use xinfang_tests::{bench_arg as arg, bench_case as case, log_dir, node_toml, NatsServer, ServiceProcess};

/// The four events of case `i`: registered now, routed a minute later, accepted an hour
/// later, replied a day later.
fn history(i: usize) -> Vec<xinfang_shared::event::Envelope> {
    let case = case(i);
    let t = now_cst();
    let minutes = |m| t + chrono::Duration::minutes(m);
    let mut registered = fixtures::registered(&format!("{case}:registered"), t);
    registered.case_id = case.clone();
    let mut routed = fixtures::routed(&registered, minutes(1));
    let organ = OrganId::parse("320211-zjj").expect("organ");
    let mut accepted = fixtures::event(
        &routed.caused_id("accepted"),
        minutes(60),
        "staff",
        None,
        EventData::Accepted { organ_id: organ },
    );
    let data = EventData::Replied { outcome: Outcome::Supported, summary: "已维修。".into() };
    let mut replied = fixtures::event(&accepted.caused_id("replied"), minutes(60 * 24), "staff", None, data);
    for e in [&mut routed, &mut accepted, &mut replied] {
        e.case_id = case.clone();
    }
    vec![registered, routed, accepted, replied]
}

/// One plain consumer's read of every case event: (events, seconds).
async fn raw_read(nats: &NatsServer, node: &NodeCode) -> (u64, f64) {
    let js = nats.jetstream().await;
    let started = Instant::now();
    let mut n = 0u64;
    ledger::scan_stream(&js, &format!("XF_CASES_{node}"), subjects::case_events(node), |_, _, payload| {
        n += u64::from(!payload.is_empty());
        Ok(())
    })
    .await
    .expect("read");
    (n, started.elapsed().as_secs_f64())
}

/// The service's own figures from the last `timer store rebuilt` line of its log.
fn logged_rebuild() -> Option<(f64, f64)> {
    let log = std::fs::read_to_string(log_dir().join("deadlines.log")).ok()?;
    let line = log.lines().rev().find(|l| l.contains("timer store rebuilt"))?;
    // the log is text with colours: `…read_s<esc>[0m<esc>[2m=<esc>[0m2.71…`
    let plain: String = line.split('\x1b').map(|part| part.split_once('m').map_or(part, |(_, rest)| rest)).collect();
    let field =
        |k: &str| plain.split_whitespace().find_map(|t| t.strip_prefix(k)?.strip_prefix('=')?.parse::<f64>().ok());
    Some((field("read_s")?, field("replay_s")?))
}

#[tokio::main]
async fn main() {
    let events = arg("--events", 1_000_000);
    let cases = events.div_ceil(4);
    let node = NodeCode::parse("320211").expect("node");
    let nats = NatsServer::start(false);
    let ledger = Ledger::open(nats.jetstream().await, node.clone()).await.expect("ledger");
    let started = Instant::now();
    const CHUNK: usize = 5_000;
    for from in (0..cases).step_by(CHUNK) {
        let run: Vec<_> = (from..(from + CHUNK).min(cases)).flat_map(history).map(|e| ledger.outgoing(&e)).collect();
        ledger.append_rendered(run).await.expect("fill the ledger");
    }
    let fill_secs = started.elapsed().as_secs_f64();

    let (read, raw_secs) = raw_read(&nats, &node).await;
    assert_eq!(read as usize, cases * 4, "the plain consumer read every event");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml("320211", &nats.url, "")).expect("config");
    let started = Instant::now();
    let service = ServiceProcess::start("deadlines", &config, &nats.url, dir.path());
    let ready_secs = started.elapsed().as_secs_f64();
    let metrics = reqwest::get(format!("{}/metrics", service.http)).await.expect("metrics").text().await.expect("text");
    let rebuilt = metrics
        .lines()
        .find(|l| l.starts_with("xf_deadlines_rebuilt_events_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let armed = metrics
        .lines()
        .filter(|l| l.starts_with("xf_deadlines_armed_timers{") || l.starts_with("xf_deadlines_armed{"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>();
    drop(service);
    let (_, raw_after) = raw_read(&nats, &node).await;

    let raw_rate = read as f64 / raw_secs;
    let raw_after_rate = read as f64 / raw_after;
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| ledger filled | {read} events, {cases} cases ({fill_secs:.1} s as fast-ingest batches) |");
    println!("| raw: one plain consumer reads them, before / after | {raw_secs:.2} s ({raw_rate:.0}/s) / {raw_after:.2} s ({raw_after_rate:.0}/s) |");
    println!(
        "| deadlines on a lost store, spawn → ready (rebuilt from the ledger) | {ready_secs:.2} s ({:.0} events/s, **{:.0} %** of raw before, {:.0} % after) |",
        read as f64 / ready_secs,
        100.0 * read as f64 / ready_secs / raw_rate,
        100.0 * read as f64 / ready_secs / raw_after_rate
    );
    if let Some((read_s, replay_s)) = logged_rebuild() {
        println!(
            "| of which, by the service's log: read into its scratch tree / replay | {read_s:.2} s / {replay_s:.2} s |"
        );
    }
    println!("| events the rebuild read (metric) / timers armed after it | {rebuilt:.0} / {armed:.0} |");
}
