//! Issue 17: a city (hub and two districts, each `xinfang up`) scraped by a real Prometheus
//! with the project's rules. Petitions go through acceptance, refusal, reply, evaluation, a
//! repeat, a breach, a late acceptance and reply, a supervision and an escalation to the city;
//! then every recording rule's expression and every dashboard panel's query is evaluated
//! against that Prometheus: each returns data, and the indicators equal what the test counts
//! in the ledgers. Every service's `/metrics` passes `promtool check metrics`. The city office's
//! view (`GET /v1/city/figures` on the hub) shows a district's campaign and reception figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xinfang_shared::event::{Envelope, EventData};
use xinfang_shared::ledger::read_stream;
use xinfang_tests::topology::{parent_connected, submit, wait_until, City};
use xinfang_tests::{free_port, petition_by};

/// The project's directory (where `deploy/` is).
fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A binary of Debian's `prometheus` package (`PROMETHEUS` / `PROMTOOL` override).
fn tool(name: &str) -> PathBuf {
    let var = name.to_uppercase();
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let found =
        std::env::var("PATH").unwrap_or_default().split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("no {name} on the PATH: scripts/setup.sh --test-tools installs Debian's prometheus"))
}

/// A Prometheus scraping `targets` every second with deploy/prometheus/rules.
struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[PathBuf]) -> Self {
        let files: Vec<String> = targets.iter().map(|t| format!("          - {}", t.display())).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}/*.yml\nscrape_configs:\n  - job_name: xinfang\n    honor_labels: true\n    file_sd_configs:\n      - refresh_interval: 1s\n        files:\n{files}\n",
            rules = project().join("deploy/prometheus/rules").display(),
            files = files.join("\n"),
        );
        let file = dir.join("prometheus.yml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("XF_TEST_UP_STDERR").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("prometheus");
        let http = xinfang_tests::staff_http(Duration::from_secs(10));
        Self { child, url: format!("http://127.0.0.1:{port}"), http }
    }

    /// An instant query's result vector (panics on an error: a query that does not parse).
    async fn query(&self, expr: &str) -> Vec<Value> {
        let r = self.http.get(format!("{}/api/v1/query", self.url)).query(&[("query", expr)]).send().await;
        let Ok(r) = r else { return Vec::new() };
        let status = r.status();
        let body: Value = r.json().await.unwrap_or_default();
        assert!(status.is_success() || status.as_u16() == 503, "{expr}: {status} {body}");
        assert_ne!(body["status"], "error", "{expr}: {body}");
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of each series of `expr`, by its labels (`node`, `organ` …) joined with `/`.
    async fn values(&self, expr: &str, by: &[&str]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.query(expr).await {
            let key: Vec<&str> = by.iter().map(|l| s["metric"][*l].as_str().unwrap_or("")).collect();
            let v: f64 = s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            out.insert(key.join("/"), v);
        }
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The indicator counts of the ledgers, counted the test's own way: a decision or reply is late
/// when a breach of its step came before it (the test acts well before a due, or after its
/// breach). Keys: `<count>/<node>/<organ>/<outcome>` (petitions: organ `-`).
fn ledger_counts(node: &str, events: &[Envelope]) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    let mut by_case: BTreeMap<String, Vec<&Envelope>> = BTreeMap::new();
    for e in events {
        by_case.entry(e.case_id.to_string()).or_default().push(e);
    }
    for history in by_case.values() {
        let mut organ = "none".to_string();
        let mut breached = Vec::new();
        for e in history {
            let mut add = |count: &str, organ: &str, outcome: &str| {
                *counts.entry(format!("{count}/{node}/{organ}/{outcome}")).or_insert(0.0) += 1.0;
            };
            let late = |step: &str, breached: &Vec<String>| {
                if breached.iter().any(|s| s == step) {
                    "late"
                } else {
                    "on_time"
                }
            };
            match e.data().ok().flatten() {
                Some(EventData::Registered(r)) => {
                    add("petitions", "-", if r.repeat_of.is_some() { "repeat" } else { "first" })
                }
                Some(EventData::Routed { organ_id, .. }) => organ = organ_id.to_string(),
                Some(EventData::DeadlineBreached { step, .. }) => breached.push(step.name().to_string()),
                Some(EventData::Accepted { organ_id }) | Some(EventData::Rejected { organ_id, .. }) => {
                    add("acceptance_decisions", organ_id.as_str(), late("acceptance", &breached))
                }
                Some(EventData::Replied { .. }) => add("replies", &organ, late("handling", &breached)),
                Some(EventData::Evaluated { satisfaction }) => {
                    let s = serde_json::to_value(satisfaction).unwrap();
                    add("evaluations", &organ, s.as_str().unwrap())
                }
                _ => {}
            }
        }
    }
    counts
}

/// Σ of the counts matching `count`, a node, an organ (`None`: all) and outcomes (empty: all).
fn sum(counts: &BTreeMap<String, f64>, count: &str, node: &str, organ: Option<&str>, outcomes: &[&str]) -> f64 {
    counts
        .iter()
        .filter(|(k, _)| {
            let p: Vec<&str> = k.split('/').collect();
            p[0] == count
                && p[1] == node
                && organ.is_none_or(|o| p[2] == o)
                && (outcomes.is_empty() || outcomes.contains(&p[3]))
        })
        .map(|(_, v)| v)
        .sum()
}

/// An indicator of the rules: name, then (numerator count, its outcomes; denominator count).
const INDICATORS: &[(&str, &str, &[&str], &str)] = &[
    ("acceptance_on_time", "acceptance_decisions", &["on_time"], "acceptance_decisions"),
    ("replies_on_time", "replies", &["on_time"], "replies"),
    ("evaluated", "evaluations", &[], "replies"),
    ("satisfied", "evaluations", &["satisfied", "basically_satisfied"], "evaluations"),
    ("repeat_petitions", "petitions", &["repeat"], "petitions"),
];

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http.post(&url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or_default();
    assert!(status < 300, "{url}: {status} {v}");
    v
}

/// A campaign holding `cases` (its figures set by reading it) and a reception day with a
/// booking recorded as received, for the city dashboard's campaign and reception panels.
async fn campaign_and_reception(http: &reqwest::Client, base: &str, cases: &[&str]) {
    let today = chrono::Utc::now().with_timezone(&xinfang_shared::time::cst()).date_naive();
    let campaign = json!({"name": "攻坚化解", "starts_on": today.to_string(), "ends_on": (today + chrono::Duration::days(90)).to_string()});
    let cid = post(http, format!("{base}/v1/campaigns"), campaign).await["campaign_id"].as_str().unwrap().to_string();
    post(http, format!("{base}/v1/campaigns/{cid}/cases"), json!({"case_ids": cases})).await;
    let progress: Value = http.get(format!("{base}/v1/campaigns/{cid}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(progress["progress"]["cases"], 2, "{progress}");
    let day = today + chrono::Duration::days(3);
    let slot = json!({"leader": {"name": "张明", "title": "区长"}, "starts_at": format!("{day}T09:00:00+08:00"),
                      "ends_at": format!("{day}T11:00:00+08:00"), "place": "接待大厅", "capacity": 5});
    let rid = post(http, format!("{base}/v1/receptions"), slot).await["reception_id"].as_str().unwrap().to_string();
    let booked =
        post(http, format!("{base}/v1/receptions/{rid}/appointments"), json!({"petition": petition_by(7)})).await;
    let appointment = booked["appointment_id"].as_str().unwrap();
    post(
        http,
        format!("{base}/v1/receptions/{rid}/appointments/{appointment}"),
        json!({"attended": true, "outcome": "责成住建局办理"}),
    )
    .await;
}

async fn act(http: &reqwest::Client, base: &str, case: &str, action: Value) {
    let r = http.post(format!("{base}/v1/cases/{case}/actions")).json(&action).send().await.unwrap();
    let status = r.status();
    assert_eq!(status.as_u16(), 200, "{action}: {}", r.text().await.unwrap_or_default());
}

/// Waits for a case's event of `kind` (and `step`, for a breach) in `node`'s ledger.
async fn wait_event(js: &async_nats::jetstream::Context, node: &str, case: &str, kind: &str, step: Option<&str>) {
    let subject = format!("xf.{node}.case.{case}.{kind}");
    wait_until(Duration::from_secs(60), &format!("{kind} of {case}"), || async {
        let got = read_stream(js, &format!("XF_CASES_{node}"), subject.clone()).await.unwrap_or_default();
        got.iter().any(|s| match (&s.event.data().ok().flatten(), step) {
            (Some(EventData::DeadlineBreached { step: st, .. }), Some(want)) => st.name() == want,
            (_, None) => true,
            _ => false,
        })
    })
    .await;
}

/// The PromQL of every panel of every dashboard, with the template variables set to "all".
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = project().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap();
                let expr = expr.replace("$node", ".*").replace("$organ", ".*").replace("$__rate_interval", "10m");
                out.push((format!("{name} {}", p["title"]), expr));
            }
        }
    }
    out
}

/// `record` → `expr` of every recording rule (rules/indicators.yml is generated: one line
/// `- record: NAME`, then `expr: |` and its indented lines).
fn recording_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(project().join("deploy/prometheus/rules/indicators.yml")).unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_expr = false;
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("- record: ") {
            out.push((name.to_string(), String::new()));
            in_expr = false;
        } else if line.trim() == "expr: |" {
            in_expr = true;
        } else if in_expr && line.starts_with("          ") {
            let e = &mut out.last_mut().unwrap().1;
            e.push_str(line.trim());
            e.push(' ');
        } else {
            in_expr = false;
        }
    }
    assert!(out.len() >= 20 && out.iter().all(|(_, e)| !e.is_empty()), "recording rules read: {out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_and_panel_has_data_and_the_indicators_are_the_ledgers() {
    let dir = tempfile::tempdir().unwrap();
    let periods = "\n[deadlines.periods]\nacceptance = \"6s\"\nhandling = \"6s\"\n";
    let city = City::start(dir.path(), periods).await;
    let http = xinfang_tests::staff_http(Duration::from_secs(10));
    let nodes = ["320200", "320211", "320213"];
    let targets: Vec<PathBuf> = nodes.iter().map(|n| dir.path().join(n).join("prometheus/targets.json")).collect();
    for t in &targets {
        assert!(t.is_file(), "xinfang up wrote {}", t.display());
    }
    let prom = Prometheus::start(&dir.path().join("prom"), &targets);
    // every service scraped, its counters first seen at zero, before any petition
    // six services (web among them) on each of the three nodes
    wait_until(Duration::from_secs(60), "all 18 services scraped", || async {
        prom.values("up{job=\"xinfang\"} == 1", &["instance"]).await.len() == 18
            && prom.values("xf_deadlines_petitions_total", &["node", "outcome"]).await.len() == 6
    })
    .await;
    let binhu = &city.districts[0];
    for d in &city.districts {
        wait_until(Duration::from_secs(30), "leaf link up", || parent_connected(&http, d)).await;
    }
    let base = binhu.http();
    let js = city.jetstream("320211").await;
    let org = json!({"kind": "organ", "id": "320211-zjj"});
    let me = json!({"kind": "petitioner", "id": "self"});

    // on time: two accepted, replied and rated, one refused; a repeat of the first
    let (a, b, c) = (
        submit(&http, binhu, &petition_by(1)).await,
        submit(&http, binhu, &petition_by(2)).await,
        submit(&http, binhu, &petition_by(3)).await,
    );
    // late: left until its acceptance breaches (a supervision), then accepted; its handling too
    let late = submit(&http, binhu, &petition_by(4)).await;
    // a group petition, reported to the city at once; one for the other district
    let mut group = petition_by(5);
    group["headcount"] = json!(6);
    let group = submit(&http, binhu, &group).await;
    let mut elsewhere = petition_by(6);
    elsewhere["location"] = json!({"division": "320213", "address": "梁溪区崇安寺"});
    submit(&http, binhu, &elsewhere).await;
    for case in [&a, &b, &c, &late, &group] {
        wait_event(&js, "320211", case, "routed", None).await;
    }
    act(&http, &base, &a, json!({"action": "accept", "actor": org})).await;
    act(&http, &base, &b, json!({"action": "accept", "actor": org})).await;
    act(
        &http,
        &base,
        &c,
        json!({"action": "reject", "actor": org, "reason_code": "not_a_petition", "note": "非信访事项"}),
    )
    .await;
    for case in [&a, &b] {
        act(&http, &base, case, json!({"action": "reply", "actor": org, "outcome": "supported", "summary": "已维修"}))
            .await;
    }
    act(&http, &base, &a, json!({"action": "evaluate", "actor": me, "satisfaction": "satisfied"})).await;
    act(&http, &base, &b, json!({"action": "evaluate", "actor": me, "satisfaction": "unsatisfied"})).await;
    campaign_and_reception(&http, &base, &[&a, &b]).await;
    // the city view: the hub's office reads each district's figures as reported up
    let hub = city.hub.http();
    wait_until(Duration::from_secs(60), "the district's figures at the city", || async {
        let Ok(r) = http.get(format!("{hub}/v1/city/figures")).send().await else { return false };
        let v: Value = r.json().await.unwrap_or_default();
        let nodes: Vec<&str> =
            v["nodes"].as_array().map(|n| n.iter().filter_map(|x| x["node"].as_str()).collect()).unwrap_or_default();
        let binhu =
            v["nodes"].as_array().and_then(|n| n.iter().find(|x| x["node"] == "320211")).cloned().unwrap_or_default();
        let attended: u64 = binhu["receptions"]
            .as_object()
            .map(|y| y.values().filter_map(|f| f["attended"].as_u64()).sum())
            .unwrap_or(0);
        nodes == ["320200", "320211", "320213"] && binhu["campaigns"][0]["progress"]["cases"] == 2 && attended == 1
    })
    .await;
    let repeat = wait_until(Duration::from_secs(30), "a repeat linked", || async {
        let r = http.post(format!("{base}/v1/petitions")).json(&petition_by(4)).send().await.unwrap();
        let v: Value = r.json().await.unwrap_or_default();
        !v["repeat_of"].is_null()
    });
    repeat.await;
    wait_event(&js, "320211", &late, "deadline_breached", Some("acceptance")).await;
    act(&http, &base, &late, json!({"action": "accept", "actor": org})).await;
    wait_event(&js, "320211", &late, "deadline_breached", Some("handling")).await;
    act(&http, &base, &late, json!({"action": "reply", "actor": org, "outcome": "explained", "summary": "已解释"}))
        .await;
    act(&http, &base, &late, json!({"action": "evaluate", "actor": me, "satisfaction": "basically_satisfied"})).await;
    wait_event(&js, "320211", &late, "escalated", None).await;

    // the ledgers' counts, and Prometheus once it has scraped them (a few scrapes)
    let mut expected = BTreeMap::new();
    for node in nodes {
        let js = city.jetstream(node).await;
        let events: Vec<Envelope> = read_stream(&js, &format!("XF_CASES_{node}"), format!("xf.{node}.case.>"))
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.event)
            .collect();
        expected.extend(ledger_counts(node, &events));
    }
    assert_eq!(sum(&expected, "acceptance_decisions", "320211", None, &["late"]), 1.0, "{expected:?}");
    assert_eq!(sum(&expected, "replies", "320211", None, &["late"]), 1.0, "{expected:?}");
    assert_eq!(sum(&expected, "petitions", "320211", None, &["repeat"]), 1.0, "{expected:?}");
    let total: f64 = sum(&expected, "petitions", "320211", None, &[]);
    wait_until(Duration::from_secs(30), "the last counts scraped", || async {
        let got = prom.values("sum by (node) (xf_deadlines_petitions_total)", &["node"]).await;
        let replies = prom.values("sum by (node) (xf_deadlines_evaluations_total)", &["node"]).await;
        got.get("320211") == Some(&total) && replies.get("320211") == Some(&3.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // every recording rule's expression returns data; each indicator equals the ledger's
    let mut checked = 0;
    for (record, expr) in recording_rules() {
        let got = prom.query(&expr).await;
        assert!(!got.is_empty(), "recording rule {record} returns no data: {expr}");
        let Some((name, num, outcomes, den)) =
            INDICATORS.iter().find(|(n, ..)| record.contains(&format!(":xf_{n}:ratio"))).copied()
        else {
            continue;
        };
        let by_organ = record.starts_with("node_organ:");
        let labels: &[&str] = if by_organ { &["node", "organ"] } else { &["node"] };
        for (key, value) in prom.values(&expr, labels).await {
            let mut parts = key.split('/');
            let (node, organ) = (parts.next().unwrap(), parts.next());
            let want = sum(&expected, num, node, organ, outcomes) / sum(&expected, den, node, organ, &[]);
            assert!((value - want).abs() < 1e-9, "{record} {key}: Prometheus {value}, ledger {want} ({name})");
            checked += 1;
        }
        // and the recorded series agrees with its expression (the 1-day group runs every second)
        if record.ends_with("1d") {
            for (key, value) in prom.values(&record, labels).await {
                let want = prom.values(&expr, labels).await[&key];
                assert!((value - want).abs() < 1e-9, "recorded {record} {key}: {value}, expression {want}");
            }
        }
    }
    assert!(checked >= 16, "indicator series compared: {checked}");

    // every dashboard panel's query returns data (the 30-day group records once a minute)
    for (panel, expr) in dashboard_queries() {
        let waited = Instant::now();
        loop {
            let got = prom.query(&expr).await;
            let numbers = got.iter().any(|s| s["value"][1].as_str().is_some_and(|v| v != "NaN"));
            if numbers {
                break;
            }
            assert!(waited.elapsed() < Duration::from_secs(90), "{panel}: no data for {expr}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // docs/observability.md names every metric scraped, every alert, every record; every alert
    // has its runbook
    let doc = std::fs::read_to_string(project().join("docs/observability.md")).unwrap();
    let runbooks = std::fs::read_to_string(project().join("docs/runbooks.md")).unwrap();
    let names: Value =
        prom.http.get(format!("{}/api/v1/label/__name__/values", prom.url)).send().await.unwrap().json().await.unwrap();
    let per_consumer = ["_consumer_pending", "_events_total", "_dead_letters_total"];
    for name in names["data"].as_array().unwrap().iter().filter_map(|n| n.as_str()).filter(|n| n.starts_with("xf_")) {
        let base = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        let covered = doc.contains(&format!("`{base}`"))
            || doc.contains(&format!("{base}`,"))
            || per_consumer.iter().any(|s| base.ends_with(s));
        assert!(covered, "docs/observability.md does not list {base}");
    }
    let alerts = std::fs::read_to_string(project().join("deploy/prometheus/rules/alerts.yml")).unwrap();
    for alert in alerts.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(doc.contains(&format!("`{alert}`")), "docs/observability.md does not list {alert}");
        assert!(runbooks.contains(&format!("## Alert Name: {alert}\n")), "docs/runbooks.md has no runbook for {alert}");
    }
    for (record, _) in recording_rules() {
        let general = record.replace("ratio1d", "ratio<w>").replace("ratio30d", "ratio<w>");
        let general = general.replace("increase1d", "increase<w>").replace("increase30d", "increase<w>");
        let organ = general.replacen("node_organ:", "node:", 1);
        let listed = [&record, &general, &organ].iter().any(|r| doc.contains(&format!("`{r}`")))
            || (general.starts_with("node_organ_outcome:")
                && doc.contains("node_organ_outcome:xf_deadlines_acceptance_decisions:increase<w>"));
        assert!(listed, "docs/observability.md does not list the record {record}");
    }

    // every service's /metrics passes promtool's lint
    for node in [&city.hub, &city.districts[0], &city.districts[1]] {
        for (service, url) in node.ready["services"].as_object().unwrap() {
            let page =
                http.get(format!("{}/metrics", url.as_str().unwrap())).send().await.unwrap().text().await.unwrap();
            let mut check = Command::new(tool("promtool"))
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            check.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
            let out = check.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && said.trim().is_empty(), "{service} /metrics: {said}");
        }
    }
}
