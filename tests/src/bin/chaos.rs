//! `xinfang-chaos`: a fault campaign (issue 14). Runs, with `xinfang up` on 127.0.0.1, either
//! a district (320211) and the city (320200) on one nats-server, or with `--city` the hub and two
//! districts (320211, 320213), each its own nats-server, linked through TCP proxies. Under a
//! steady load of petitions (some group petitions, which go up to the city at once; in the city
//! some about the other district, which are forwarded) and organ actions (accept, decline,
//! reply), at random moments it SIGKILLs a random service, SIGKILLs nats-server (`up` restarts
//! both), SIGKILLs a service and deletes its sled directory, or (city) cuts a leaf link for a
//! few seconds. Then it checks every invariant of `xinfang_tests::invariants` from the ledgers
//! and prints each with its count.
//!
//! Usage: `xinfang-chaos [--seed N] [--minutes M] [--rate PETITIONS_PER_S] [--fault-every S]
//! [--duplicate-window S] [--city] [--report FILE.md]` after `cargo build --release --workspace
//! --bins`. The streams' duplicate window is shortened (default 60 s instead of an hour), so
//! that a service relying on it instead of recognising its own outputs shows up as a duplicate.
//! Exit code 0 when every invariant holds; otherwise each failure is printed with its case id,
//! and the seed. The same seed replays the same petitions, actions and fault schedule.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use xinfang_tests::invariants::{caught_up, check_node, Expectations, Others, Report};
use xinfang_tests::topology::{City, DISTRICTS};
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

/// How long the node may take to catch up once the load has stopped.
const SETTLE_LIMIT: Duration = Duration::from_secs(900);

struct Args {
    seed: u64,
    minutes: f64,
    rate: f64,
    fault_every: f64,
    duplicate_window: u64,
    /// A hub and two districts, each its own nats-server, with leaf links to cut.
    city: bool,
    report: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a =
        Args { seed: 1, minutes: 3.0, rate: 4.0, fault_every: 8.0, duplicate_window: 60, city: false, report: None };
    let argv: Vec<String> = std::env::args().collect();
    a.city = argv.iter().any(|x| x == "--city");
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
    /// Node and case id of every receipt handed out.
    receipts: Vec<(String, String)>,
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

/// The nodes under test: the districts that take load and faults, and where every node's
/// streams are read.
struct Nodes<'a> {
    /// Code, its `xinfang up`, its node file.
    districts: Vec<(&'static str, &'a UpNode, String)>,
    /// Every node's JetStream (the same context for all on one shared server).
    js: Others,
    /// The links that can be cut (city layout only), in `districts` order.
    links: Vec<&'a xinfang_tests::proxy::Proxy>,
}

impl Nodes<'_> {
    /// Every node's streams whose consumers must have caught up.
    fn streams(&self) -> Vec<(async_nats::jetstream::Context, Vec<String>)> {
        self.js
            .iter()
            .map(|(code, js)| (js.clone(), vec![format!("XF_CASES_{code}"), format!("XF_INBOX_{code}")]))
            .collect()
    }
}

async fn campaign(a: &Args) -> bool {
    // inherited by `xinfang up` and its services
    std::env::set_var(xinfang_shared::ledger::DUPLICATE_WINDOW_ENV, a.duplicate_window.to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "xinfang-chaos: seed {}, {} min, {} petitions/s, a fault every ~{} s, {}",
        a.seed,
        a.minutes,
        a.rate,
        a.fault_every,
        if a.city {
            "a hub and two districts, each its own nats-server"
        } else {
            "a district and the city on one nats-server"
        }
    );
    if a.city {
        let city = City::start(dir.path(), PERIODS).await;
        let mut js = Others::new();
        for code in ["320200", "320211", "320213"] {
            js.insert(code.to_string(), city.jetstream(code).await);
        }
        let districts = DISTRICTS
            .iter()
            .enumerate()
            .map(|(i, (code, _))| (*code, &city.districts[i], city.file(code).to_string()))
            .collect();
        run(a, &Nodes { districts, js, links: city.links.iter().collect() }).await
    } else {
        let district_toml = dir.path().join("320211.toml");
        std::fs::write(&district_toml, node_toml("320211", "", PERIODS)).expect("node file");
        let district = UpNode::start(&district_toml, &dir.path().join("320211"));
        let nats_url = district.nats_url();
        let city_file = dir.path().join("320200.toml");
        std::fs::write(&city_file, city_toml(&nats_url)).expect("city file");
        let _city = UpNode::start(&city_file, &dir.path().join("320200"));
        let shared = async_nats::jetstream::new(async_nats::connect(&nats_url).await.expect("connect"));
        let js = [("320200".to_string(), shared.clone()), ("320211".to_string(), shared)].into();
        let districts = vec![("320211", &district, node_toml("320211", &nats_url, PERIODS))];
        run(a, &Nodes { districts, js, links: vec![] }).await
    }
}

async fn run(a: &Args, nodes: &Nodes<'_>) -> bool {
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(a.minutes * 60.0);
    let load = Arc::new(Mutex::new(Load::default()));
    let http = xinfang_tests::staff_http(Duration::from_secs(10));
    let intakes: Vec<(&'static str, String)> = nodes.districts.iter().map(|(c, up, _)| (*c, up.http())).collect();
    let petitions = tokio::spawn(submit_petitions(http.clone(), intakes.clone(), a.seed, a.rate, end, load.clone()));
    let actions = tokio::spawn(act_as_organs(http.clone(), intakes, a.seed, end, load.clone()));
    let services: Vec<String> =
        nodes.districts.iter().flat_map(|(_, up, _)| SERVICES.iter().map(|s| up.service_url(s))).collect();
    let streams = nodes.streams();

    // faults come on their schedule whether or not the node is whole again; a watcher tells
    // when it is, and each fault's recovery is the time from it to the next moment the node is
    // whole (every service ready, every consumer caught up)
    let pending: Pending = Arc::default();
    let recovered: Arc<Mutex<BTreeMap<usize, Duration>>> = Arc::default();
    let stop = xinfang_shared::CancellationToken::new();
    let watcher = tokio::spawn(watch_whole(
        http.clone(),
        services.clone(),
        streams.clone(),
        if nodes.links.is_empty() { vec![] } else { nodes.districts.iter().map(|(_, up, _)| up.http()).collect() },
        pending.clone(),
        recovered.clone(),
        stop.clone(),
    ));
    let mut rng = StdRng::seed_from_u64(a.seed ^ 0xfa017);
    let mut faults: Vec<Fault> = Vec::new();
    loop {
        let gap = Duration::from_secs_f64(a.fault_every * rng.random_range(0.5..1.5));
        if Instant::now() + gap >= end {
            break;
        }
        tokio::time::sleep(gap).await;
        let which = rng.random_range(0..nodes.districts.len());
        let (code, district, _) = &nodes.districts[which];
        let roll = rng.random_range(0..if nodes.links.is_empty() { 10 } else { 12 });
        let (kind, target) = match roll {
            0..=4 => ("kill service", SERVICES[rng.random_range(0..SERVICES.len())].to_string()),
            5..=6 => ("kill nats-server", "nats-server".to_string()),
            7..=9 => ("delete store", WITH_STORE[rng.random_range(0..WITH_STORE.len())].to_string()),
            _ => ("cut link", "leaf link".to_string()),
        };
        let at = started.elapsed();
        if kind == "cut link" {
            let down = Duration::from_secs_f64(rng.random_range(3.0..20.0));
            nodes.links[which].cut();
            tokio::time::sleep(down).await;
            nodes.links[which].heal();
        } else {
            let process = if target == "nats-server" { target.clone() } else { comm(&target) };
            let Some(pid) = district.pid_of(&process) else {
                println!(
                    "  {:>6.1}s {code} {kind} {target}: not running (still restarting), skipped",
                    at.as_secs_f64()
                );
                continue;
            };
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            if kind == "delete store" {
                // `up` restarts a dead service after 0.5 s at the earliest: the directory is gone by then
                let _ = std::fs::remove_dir_all(district.data.join(&target));
            }
        }
        println!("  {:>6.1}s {code} {kind} {target}", started.elapsed().as_secs_f64());
        let target = if nodes.districts.len() > 1 { format!("{code} {target}") } else { target };
        pending.lock().expect("pending").push((faults.len(), Instant::now()));
        faults.push(Fault { kind, target, recovery: None });
    }
    let _ = petitions.await;
    let _ = actions.await;
    println!("  load stopped at {:.0} s; waiting for the nodes to settle", started.elapsed().as_secs_f64());
    let settle_from = Instant::now();
    while !(all_caught_up(&streams).await && settle_from.elapsed() > Duration::from_secs(10)) {
        if settle_from.elapsed() > SETTLE_LIMIT {
            println!("  consumers not caught up {} s after the load stopped", SETTLE_LIMIT.as_secs());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled = settle_from.elapsed();
    // one more look, so that the last faults are seen whole once the node has settled
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let _ = watcher.await;
    for (i, d) in recovered.lock().expect("recovered").iter() {
        faults[*i].recovery = Some(*d);
    }

    let load = std::mem::take(&mut *load.lock().expect("load"));
    let mut reports = Vec::new();
    for (code, _, file) in &nodes.districts {
        let settings = xinfang_shared::config::Settings::from_toml(file).expect("node file");
        let receipts: Vec<String> =
            load.receipts.iter().filter(|(c, _)| c == code).map(|(_, case)| case.clone()).collect();
        let x = Expectations {
            settings: &settings,
            receipts: &receipts,
            slack: Duration::from_secs(10),
            notice_triggers: xinfang_notification::TRIGGERS,
            escalation_triggers: xinfang_escalation::ladder::TRIGGERS,
        };
        match check_node(&nodes.js[*code], &nodes.js, &x).await {
            Ok(r) => reports.push(r),
            Err(e) => {
                println!("  could not read the ledger of {code}: {e}");
                return false;
            }
        }
    }
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

async fn all_caught_up(streams: &[(async_nats::jetstream::Context, Vec<String>)]) -> bool {
    for (js, names) in streams {
        if !caught_up(js, names).await {
            return false;
        }
    }
    true
}

/// Faults not yet seen whole again: index, when injected.
type Pending = Arc<Mutex<Vec<(usize, Instant)>>>;

/// Every 250 ms, whether every service of every district answers `/readyz`, every consumer
/// has caught up and (in the city) every district's link is up with nothing owed either way
/// (`/v1/node/links`); when so, each pending fault (injected at least 300 ms before: a process just
/// killed can still answer for a moment) is recovered, after the time since it was injected.
async fn watch_whole(
    http: reqwest::Client,
    services: Vec<String>,
    streams: Vec<(async_nats::jetstream::Context, Vec<String>)>,
    linked: Vec<String>,
    pending: Pending,
    recovered: Arc<Mutex<BTreeMap<usize, Duration>>>,
    stop: xinfang_shared::CancellationToken,
) {
    while !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if pending.lock().expect("pending").is_empty() {
            continue;
        }
        let checked_from = Instant::now();
        let mut ready = true;
        for s in &services {
            ready &= http.get(format!("{s}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
        }
        for intake in &linked {
            let view: Value = match http.get(format!("{intake}/v1/node/links")).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            ready &= view["parent"]["connected"] == true && view["outbox"]["pending"] == 0 && view["inbox"]["lag"] == 0;
        }
        if !(ready && all_caught_up(&streams).await) {
            continue;
        }
        let mut pending = pending.lock().expect("pending");
        let mut recovered = recovered.lock().expect("recovered");
        pending.retain(|(i, at)| {
            if checked_from.duration_since(*at) < Duration::from_millis(300) {
                return true;
            }
            recovered.insert(*i, checked_from.duration_since(*at));
            false
        });
    }
}

/// A petition every `1/rate` seconds at a random district (in the city, one in ten about the
/// other district's area, so it is forwarded there), each retried with its idempotency key
/// until it has a receipt (intake or nats-server may be down at that moment).
async fn submit_petitions(
    http: reqwest::Client,
    intakes: Vec<(&'static str, String)>,
    seed: u64,
    rate: f64,
    end: Instant,
    load: Arc<Mutex<Load>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut inflight = Vec::new();
    let mut n = 0u32;
    while Instant::now() < end {
        let at = rng.random_range(0..intakes.len());
        let (code, intake) = intakes[at].clone();
        let mut p = petition_by(rng.random_range(0..5000));
        let place = if intakes.len() > 1 && rng.random_bool(0.1) { intakes[1 - at].0 } else { code };
        p["location"] = json!({"division": place, "address": "某街道某小区"});
        if rng.random_bool(0.05) {
            p["headcount"] = json!(6); // a group petition: urgent, reported to the city at once
        }
        p["idempotency_key"] = json!(format!("chaos-{seed}-{n}"));
        n += 1;
        let (http, load) = (http.clone(), load.clone());
        inflight.push(tokio::spawn(async move {
            let give_up = end + Duration::from_secs(120);
            loop {
                let answer = http.post(format!("{intake}/v1/petitions")).json(&p).send().await;
                if let Ok(r) = answer {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    if let (200 | 201, Some(case)) = (status, body["case_id"].as_str()) {
                        load.lock().expect("load").receipts.push((code.to_string(), case.to_string()));
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
async fn act_as_organs(
    http: reqwest::Client,
    intakes: Vec<(&'static str, String)>,
    seed: u64,
    end: Instant,
    load: Arc<Mutex<Load>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xac7);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (code, case) = {
            let l = load.lock().expect("load");
            if l.receipts.is_empty() {
                continue;
            }
            l.receipts[rng.random_range(0..l.receipts.len())].clone()
        };
        let Some((_, intake)) = intakes.iter().find(|(c, _)| *c == code) else { continue };
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
        "## Fault campaign{}, seed {}: {:.1} min, {} petitions/s, a fault every ~{} s, duplicate window {} s\n\n",
        if a.city { " (city: hub and two districts, own servers)" } else { "" },
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
    for kind in ["kill service", "kill nats-server", "delete store", "cut link"] {
        let mut times: Vec<Duration> = faults.iter().filter(|f| f.kind == kind).filter_map(|f| f.recovery).collect();
        times.sort();
        if times.is_empty() {
            continue;
        }
        out += &format!(
            "Recovery (fault → every service ready and every consumer caught up; a cut from its heal), {kind}: n {}, p50 {:.1} s, p99 {:.1} s, max {:.1} s\n\n",
            times.len(),
            percentile(&times, 0.5).as_secs_f64(),
            percentile(&times, 0.99).as_secs_f64(),
            times.last().copied().unwrap_or_default().as_secs_f64()
        );
    }
    let mut all: Vec<Duration> = faults.iter().filter_map(|f| f.recovery).collect();
    all.sort();
    out += &format!(
        "Recovery, all faults: p50 {:.1} s, p99 {:.1} s; never seen whole again before the end: {}\n",
        percentile(&all, 0.5).as_secs_f64(),
        percentile(&all, 0.99).as_secs_f64(),
        faults.iter().filter(|f| f.recovery.is_none()).count()
    );
    out
}
