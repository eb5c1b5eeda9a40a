//! Issue 15: `xinfang up --demo` is the whole Wuxi example city (`deploy/wuxi/`: the hub and
//! seven districts, each its own nats-server and JetStream domain, linked as leaf nodes). Its
//! ready line comes within 60 s on this machine; then the demo petitions flow: some are
//! forwarded between districts (属地) and arrive there, some are group petitions the district
//! reports to the city at once, and the city office's inbox (`/v1/escalations`) fills.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use xinfang_shared::ledger::read_stream;
use xinfang_tests::binary;
use xinfang_tests::topology::wait_until;

/// Within how long the city's ready line must come (the figure).
const READY_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_is_the_whole_city_and_the_city_office_inbox_fills() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(binary("xinfang"))
        .args(["up", "--demo", "--data"])
        .arg(dir.path())
        .env("XF_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("up.err")).expect("log file"))
        .spawn()
        .expect("xinfang up --demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(150)).unwrap_or_else(|e| {
        // what the city said before it gave up
        let log = std::fs::read_to_string(dir.path().join("up.err")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().filter(|l| !l.contains("[INF]")).rev().take(30).collect();
        panic!(
            "no ready line from the city ({e}); its last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    });
    let took = started.elapsed();
    println!(
        "xinfang up --demo: the city of {} nodes ready in {:.1} s",
        ready["nodes"].as_object().map_or(0, |n| n.len()),
        took.as_secs_f64()
    );
    let stop = |child: &mut std::process::Child| {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let _ = child.wait();
    };
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["city"], "320200");
    let nodes = ready["nodes"].as_object().expect("nodes").clone();
    let codes: Vec<&str> = nodes.keys().map(String::as_str).collect();
    assert_eq!(codes, ["320200", "320205", "320206", "320211", "320213", "320214", "320281", "320282"]);
    if took > READY_WITHIN {
        stop(&mut child);
        panic!("ready after {took:?}, more than {READY_WITHIN:?}");
    }

    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let token = ready["staff_token"].as_str().expect("the demo's staff token in the ready line").to_string();
    let office = format!("{}/v1/escalations", nodes["320200"]["services"]["escalation"].as_str().unwrap());
    let refused = http.get(&office).send().await.expect("escalation service");
    assert_eq!(refused.status().as_u16(), 401, "the office's inbox needs credentials");
    wait_until(Duration::from_secs(90), "an escalation in the city office's inbox", || async {
        let Ok(r) = http.get(&office).bearer_auth(&token).send().await else { return false };
        let v: Value = r.json().await.unwrap_or_default();
        v["escalations"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    let mut clients = Vec::new();
    for (code, line) in nodes.iter().filter(|(c, _)| c.as_str() != "320200") {
        let client = async_nats::connect(line["nats_url"].as_str().unwrap()).await.unwrap();
        clients.push((code.clone(), async_nats::jetstream::new(client)));
    }
    wait_until(Duration::from_secs(60), "a petition forwarded between districts arrives", || async {
        for (code, js) in &clients {
            let subject = format!("xf.{code}.case.*.transferred_in");
            if read_stream(js, &format!("XF_CASES_{code}"), subject).await.is_ok_and(|s| !s.is_empty()) {
                return true;
            }
        }
        false
    })
    .await;
    stop(&mut child);
}
