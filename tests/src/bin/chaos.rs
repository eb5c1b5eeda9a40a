//! `xinfang-chaos`: a fault campaign (issue 14). Runs a district node (320211) and the city
//! (320200) with `xinfang up`, on one nats-server on 127.0.0.1, under a steady load of petitions
//! (some of them group petitions, which go up to the city at once) and organ actions (accept,
//! decline, reply), and at random moments SIGKILLs a random service, SIGKILLs nats-server
//! (`up` restarts both), or SIGKILLs a service and deletes its sled directory. Then checks every
//! invariant of `xinfang_tests::invariants` from the ledgers and prints each with its count.
//!
//! Usage: `xinfang-chaos [--seed N] [--minutes M] [--rate PETITIONS_PER_S] [--fault-every S]
//! [--duplicate-window S] [--report FILE.md]` after `cargo build --release --workspace --bins`.
//! The streams' duplicate window is shortened (default 60 s instead of an hour), so that a
//! service relying on it instead of recognising its own outputs shows up as a duplicate. Exit code 0 when every
//! invariant holds; otherwise each failure is printed with its case id, and the seed.
//! The same seed replays the same petitions, actions and fault schedule.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use xinfang_tests::invariants::{caught_up, check_node, Expectations, Others, Report};
use xinfang_tests::up::{comm, UpNode};
use xinfang_tests::{city_toml, node_toml, petition_by};

/// Periods short enough that every step of a case can run late within a campaign.
const PERIODS: &str = r#"
[deadlines.periods]
acceptance = "30s"
handling = "60s"
review_window = "90s"
supervision = "40s"
"#;

/// The district's services that `up` runs; those with a sled directory can lose it.
const SERVICES: &[&str] = &["intake", "routing", "deadlines", "escalation", "notification"];
const WITH_STORE: &[&str] = &["intake", "deadlines", "escalation", "notification"];

/// How long the campaign waits for a fault to recover before it goes on (the fault is then
/// reported as not recovered in that time; a lost store is rebuilt by replaying the ledger,
/// which under load can take longer than the load leaves room for).
const RECOVERY_LIMIT: Duration = Duration::from_secs(300);

/// How long the node may take to catch up once the load has stopped.
const SETTLE_LIMIT: Duration = Duration::from_secs(900);

struct Args {
    seed: u64,
    minutes: f64,
    rate: f64,
    fault_every: f64,
    duplicate_window: u64,
    report: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args { seed: 1, minutes: 3.0, rate: 4.0, fault_every: 8.0, duplicate_window: 60, report: None };
    let argv: Vec<String> = std::env::args().collect();
    for w in argv.windows(2) {
        match w[0].as_str() {
            "--seed" => a.seed = w[1].parse().expect("--seed N"),
            "--minutes" => a.minutes = w[1].parse().expect("--minutes M"),
            "--rate" => a.rate = w[1].parse().expect("--rate PETITIONS_PER_S"),
            "--fault-every" => a.fault_every = w[1].parse().expect("--fault-every SECONDS"),
            "--duplicate-window" => a.duplicate_window = w[1].parse().expect("--duplicate-window SECONDS"),
            "--report" => a.report = Some(w[1].clone().into()),
            _ => {}
        }
    }
    a
}

/// One injected fault and how long the node took to be whole again.
struct Fault {
    kind: &'static str,
    target: String,
    recovery: Option<Duration>,
}

#[derive(Default)]
struct Load {
    /// Case ids of every receipt handed out.
    receipts: Vec<String>,
    submit_retries: usize,
    actions: BTreeMap<String, usize>,
}

fn main() -> std::process::ExitCode {
    let a = args();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ok = runtime.block_on(campaign(&a));
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("xinfang-chaos: invariants broken; replay with --seed {}", a.seed);
        std::process::ExitCode::FAILURE
    }
}

async fn campaign(a: &Args) -> bool {
    // inherited by `xinfang up` and its services
    std::env::set_var(xinfang_shared::ledger::DUPLICATE_WINDOW_ENV, a.duplicate_window.to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    let district_toml = dir.path().join("320211.toml");
    std::fs::write(&district_toml, node_toml("320211", "", PERIODS)).expect("node file");
    let district = UpNode::start(&district_toml, &dir.path().join("320211"));
    let nats_url = district.nats_url();
    let city_file = dir.path().join("320200.toml");
    std::fs::write(&city_file, city_toml(&nats_url)).expect("city file");
    let city = UpNode::start(&city_file, &dir.path().join("320200"));
    println!(
        "xinfang-chaos: seed {}, {} min, {} petitions/s, a fault every ~{} s",
        a.seed, a.minutes, a.rate, a.fault_every
    );
    println!("  district 320211 at {} , city 320200, nats {nats_url}", district.http());

    let js = async_nats::jetstream::new(async_nats::connect(&nats_url).await.expect("connect"));
    let streams: Vec<String> =
        ["XF_CASES_320211", "XF_INBOX_320211", "XF_CASES_320200", "XF_INBOX_320200"].map(String::from).to_vec();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(a.minutes * 60.0);
    let load = Arc::new(Mutex::new(Load::default()));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    let petitions = tokio::spawn(submit_petitions(http.clone(), district.http(), a.seed, a.rate, end, load.clone()));
    let actions = tokio::spawn(act_as_organs(http.clone(), district.http(), a.seed, end, load.clone()));
    let services: Vec<String> = SERVICES.iter().map(|s| district.service_url(s)).collect();

    let mut rng = StdRng::seed_from_u64(a.seed ^ 0xfa017);
    let mut faults: Vec<Fault> = Vec::new();
    loop {
        let gap = Duration::from_secs_f64(a.fault_every * rng.random_range(0.5..1.5));
        if Instant::now() + gap >= end {
            break;
        }
        tokio::time::sleep(gap).await;
        let roll = rng.random_range(0..10);
        let (kind, target) = match roll {
            0..=4 => ("kill service", SERVICES[rng.random_range(0..SERVICES.len())].to_string()),
            5..=6 => ("kill nats-server", "nats-server".to_string()),
            _ => ("delete store", WITH_STORE[rng.random_range(0..WITH_STORE.len())].to_string()),
        };
        let process = if target == "nats-server" { target.clone() } else { comm(&target) };
        let Some(pid) = district.pid_of(&process) else {
            println!(
                "  {:>6.1}s {kind} {target}: not running (still restarting), skipped",
                started.elapsed().as_secs_f64()
            );
            continue;
        };
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        if kind == "delete store" {
            // `up` restarts a dead service after 0.5 s at the earliest: the directory is gone by then
            let _ = std::fs::remove_dir_all(district.data.join(&target));
        }
        let at = started.elapsed();
        let recovery = recover(&http, &services, &js, &streams).await;
        match recovery {
            Some(d) => {
                println!("  {:>6.1}s {kind} {target}: whole again after {:.1} s", at.as_secs_f64(), d.as_secs_f64())
            }
            None => {
                println!("  {:>6.1}s {kind} {target}: NOT whole after {} s", at.as_secs_f64(), RECOVERY_LIMIT.as_secs())
            }
        }
        faults.push(Fault { kind, target, recovery });
    }
    let _ = petitions.await;
    let _ = actions.await;
    println!("  load stopped at {:.0} s; waiting for the node to settle", started.elapsed().as_secs_f64());
    let settle_from = Instant::now();
    while !(caught_up(&js, &streams).await && settle_from.elapsed() > Duration::from_secs(10)) {
        if settle_from.elapsed() > SETTLE_LIMIT {
            println!("  consumers not caught up {} s after the load stopped", SETTLE_LIMIT.as_secs());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled = settle_from.elapsed();

    let load = std::mem::take(&mut *load.lock().expect("load"));
    let district_settings =
        xinfang_shared::config::Settings::from_toml(&node_toml("320211", &nats_url, PERIODS)).unwrap();
    let x = Expectations {
        settings: &district_settings,
        receipts: &load.receipts,
        slack: Duration::from_secs(10),
        notice_triggers: xinfang_notification::TRIGGERS,
        escalation_triggers: xinfang_escalation::ladder::TRIGGERS,
    };
    // the city's inbox is on the same server: what the district owes the city is checked there
    let others: Others = [("320200".to_string(), js.clone())].into();
    let reports = match check_node(&js, &others, &x).await {
        Ok(r) => vec![r],
        Err(e) => {
            println!("  could not read the ledger of 320211: {e}");
            return false;
        }
    };
    drop(city);
    drop(district);
    let summary = summarize(a, &faults, &load, &reports, started.elapsed(), settled);
    println!("{summary}");
    if let Some(path) = &a.report {
        std::fs::write(path, &summary).expect("write the report");
    }
    let ok = reports.iter().all(Report::ok);
    for failure in reports.iter().flat_map(Report::failures) {
        println!("FAILURE seed {}: {failure}", a.seed);
    }
    ok
}

/// Waits until every service of the district answers `/readyz` and every consumer has caught
/// up; how long that took, or `None` past [`RECOVERY_LIMIT`].
async fn recover(
    http: &reqwest::Client,
    services: &[String],
    js: &async_nats::jetstream::Context,
    streams: &[String],
) -> Option<Duration> {
    let from = Instant::now();
    // the killed process must be seen gone first: a readiness check right after the kill can
    // still reach it for a moment
    tokio::time::sleep(Duration::from_millis(300)).await;
    while from.elapsed() < RECOVERY_LIMIT {
        let mut ready = true;
        for s in services {
            let ok = http.get(format!("{s}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
            ready &= ok;
        }
        if ready && caught_up(js, streams).await {
            return Some(from.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// A petition every `1/rate` seconds, each retried with its idempotency key until it has a
/// receipt (intake or nats-server may be down at that moment).
async fn submit_petitions(
    http: reqwest::Client,
    intake: String,
    seed: u64,
    rate: f64,
    end: Instant,
    load: Arc<Mutex<Load>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut inflight = Vec::new();
    let mut n = 0u32;
    while Instant::now() < end {
        let mut p = petition_by(rng.random_range(0..5000));
        if rng.random_bool(0.05) {
            p["headcount"] = json!(6); // a group petition: urgent, reported to the city at once
        }
        p["idempotency_key"] = json!(format!("chaos-{seed}-{n}"));
        n += 1;
        let (http, intake, load) = (http.clone(), intake.clone(), load.clone());
        inflight.push(tokio::spawn(async move {
            let give_up = end + Duration::from_secs(120);
            loop {
                let answer = http.post(format!("{intake}/v1/petitions")).json(&p).send().await;
                if let Ok(r) = answer {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    if let (200 | 201, Some(case)) = (status, body["case_id"].as_str()) {
                        load.lock().expect("load").receipts.push(case.to_string());
                        return;
                    }
                    if status < 500 && status != 429 {
                        eprintln!("xinfang-chaos: petition refused {status}: {body}");
                        return;
                    }
                }
                load.lock().expect("load").submit_retries += 1;
                if Instant::now() > give_up {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
        tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
    }
    futures::future::join_all(inflight).await;
}

/// Every 100 ms an organ works one case: accepts, declines jurisdiction or replies, as the
/// case's stage allows; some cases are left alone to run late.
async fn act_as_organs(http: reqwest::Client, intake: String, seed: u64, end: Instant, load: Arc<Mutex<Load>>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xac7);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let case = {
            let l = load.lock().expect("load");
            if l.receipts.is_empty() {
                continue;
            }
            l.receipts[rng.random_range(0..l.receipts.len())].clone()
        };
        let Ok(r) = http.get(format!("{intake}/v1/cases/{case}")).send().await else { continue };
        let Ok(view) = r.json::<Value>().await else { continue };
        let (stage, organ) = (view["state"].as_str().unwrap_or(""), view["organ_id"].as_str().unwrap_or(""));
        let roll = rng.random_range(0..10);
        let action = match (stage, roll) {
            ("with_organ", 0..=5) => json!({"action": "accept"}),
            ("with_organ", 6) => json!({"action": "decline_jurisdiction", "note": "不属本机关职责"}),
            ("accepted", 0..=6) => json!({"action": "reply", "outcome": "explained", "summary": "已答复"}),
            _ => continue,
        };
        let mut body = action;
        body["actor"] = json!({"kind": "organ", "id": organ});
        let name = body["action"].as_str().unwrap_or_default().to_string();
        let Ok(r) = http.post(format!("{intake}/v1/cases/{case}/actions")).json(&body).send().await else { continue };
        if r.status().is_success() {
            *load.lock().expect("load").actions.entry(name).or_default() += 1;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The campaign as Markdown: faults by kind, load, ledgers, invariants, recovery times.
fn summarize(a: &Args, faults: &[Fault], load: &Load, reports: &[Report], took: Duration, settled: Duration) -> String {
    let mut out = String::new();
    out += &format!(
        "## Fault campaign, seed {}: {:.1} min, {} petitions/s, a fault every ~{} s, duplicate window {} s\n\n",
        a.seed,
        took.as_secs_f64() / 60.0,
        a.rate,
        a.fault_every,
        a.duplicate_window
    );
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for f in faults {
        *by_kind.entry(format!("{} ({})", f.kind, f.target)).or_default() += 1;
    }
    out += &format!("Faults injected: {}\n\n", faults.len());
    for (k, n) in &by_kind {
        out += &format!("- {k}: {n}\n");
    }
    out += &format!(
        "\nLoad: {} petitions receipted ({} submissions retried while intake or nats-server was down); organ actions: {}\n\n",
        load.receipts.len(),
        load.submit_retries,
        load.actions.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    );
    out += &format!("Caught up {:.1} s after the load stopped.\n\n```\n", settled.as_secs_f64());
    for r in reports {
        out += &r.to_string();
    }
    out += "```\n\n";
    for kind in ["kill service", "kill nats-server", "delete store"] {
        let mut times: Vec<Duration> = faults.iter().filter(|f| f.kind == kind).filter_map(|f| f.recovery).collect();
        times.sort();
        if times.is_empty() {
            continue;
        }
        out += &format!(
            "Recovery (fault → every service ready and every consumer caught up), {kind}: n {}, p50 {:.1} s, p99 {:.1} s, max {:.1} s\n\n",
            times.len(),
            percentile(&times, 0.5).as_secs_f64(),
            percentile(&times, 0.99).as_secs_f64(),
            times.last().copied().unwrap_or_default().as_secs_f64()
        );
    }
    let mut all: Vec<Duration> = faults.iter().filter_map(|f| f.recovery).collect();
    all.sort();
    out += &format!(
        "Recovery, all faults: p50 {:.1} s, p99 {:.1} s; not recovered within {} s: {}\n",
        percentile(&all, 0.5).as_secs_f64(),
        percentile(&all, 0.99).as_secs_f64(),
        RECOVERY_LIMIT.as_secs(),
        faults.iter().filter(|f| f.recovery.is_none()).count()
    );
    out
}
