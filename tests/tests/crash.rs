//! Issue 14: a service SIGKILLed while petitions keep arriving loses nothing and does nothing
//! twice, though the other services answer the same events while it is down. 120 petitions,
//! the service killed after the 40th and started again after the 120th; then every invariant
//! of `xinfang_tests::invariants` holds — all 120 routed once each, every due timer fired once,
//! every escalation and notice once. And SIGKILL of `xinfang up` leaves no process behind.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use xinfang_tests::invariants::{caught_up, check_node, Expectations, Others};
use xinfang_tests::up::{comm, UpNode};
use xinfang_tests::{node_toml, petition_by, procs, TestNode};

/// Short periods, so that the acceptance timers of every case fire within the test.
const PERIODS: &str = r#"
[deadlines.periods]
acceptance = "15s"
"#;

const SERVICES: &[&str] = &["routing", "deadlines", "escalation", "notification"];

async fn kill_after_the_40th(victim: &str) {
    let mut node = TestNode::start_services(PERIODS, SERVICES);
    let mut receipts = Vec::new();
    for i in 0..120u32 {
        if i == 40 {
            node.service(victim).sigkill();
        }
        let (status, receipt) = node.submit(&petition_by(1000 + i)).await;
        assert_eq!(status, 201, "{receipt}");
        receipts.push(receipt["case_id"].as_str().expect("case id").to_string());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.service(victim).restart();
    let last_submit = Instant::now();

    let js = node.nats.jetstream().await;
    let streams = vec![format!("XF_CASES_{}", node.node)];
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let routed = futures::future::join_all(receipts.iter().map(|c| node.events(c)))
            .await
            .iter()
            .filter(|evs| evs.iter().any(|e| e.kind == "routed"))
            .count();
        // the acceptance timers of the last cases are due 15 s after their routing
        if routed == receipts.len() && last_submit.elapsed() > Duration::from_secs(25) && caught_up(&js, &streams).await
        {
            break;
        }
        assert!(Instant::now() < end, "{victim} killed: {routed} of {} routed after 90 s", receipts.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settings = xinfang_shared::config::Settings::from_toml(&node_toml("320211", &node.nats.url, PERIODS)).unwrap();
    let report = check_node(
        &js,
        &Others::new(),
        &Expectations {
            settings: &settings,
            receipts: &receipts,
            slack: Duration::from_secs(5),
            notice_triggers: xinfang_notification::TRIGGERS,
            escalation_triggers: xinfang_escalation::ladder::TRIGGERS,
        },
    )
    .await
    .expect("read the ledger");
    println!("{victim} killed after the 40th petition:\n{report}");
    assert!(report.ok(), "{victim} killed: {:#?}", report.failures());
    let checked = |name: &str| report.checks.iter().find(|c| c.name.starts_with(name)).map_or(0, |c| c.checked);
    assert_eq!(checked("every case is routed"), 120, "one route trigger per case");
    assert!(checked("one timer per open step") >= 120, "every acceptance timer is checked");
    assert!(checked("every notice") >= 360, "receipt, assignment and reminder of each case");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_killed_after_the_40th_petition_routes_all_120_once() {
    kill_after_the_40th("routing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_killed_after_the_40th_petition_loses_no_timer() {
    kill_after_the_40th("deadlines").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_killed_after_the_40th_petition_loses_no_rung() {
    kill_after_the_40th("escalation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_killed_after_the_40th_petition_loses_no_notice() {
    kill_after_the_40th("notification").await;
}

/// `xinfang up` SIGKILLed: its services and its nats-server (under `xinfang tether`) see their
/// stdin pipe end and stop; none runs on holding ports and sled locks.
#[test]
fn sigkill_of_xinfang_up_leaves_no_process_within_5_s() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml("320211", "", "")).unwrap();
    let mut up = UpNode::start(&config, &dir.path().join("data"));
    let children = procs::descendants(up.child.id() as i32);
    let names: Vec<&str> = children.iter().map(|(_, c)| c.as_str()).collect();
    for service in ["intake", "routing", "deadlines", "escalation", "notification"] {
        assert!(names.contains(&comm(service).as_str()), "{service} not among {names:?}");
    }
    assert!(names.contains(&"nats-server"), "nats-server not among {names:?}");
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = up.child.wait();
    let killed = Instant::now();
    while children.iter().any(|(pid, _)| procs::alive(*pid)) {
        let left: Vec<_> = children.iter().filter(|(pid, _)| procs::alive(*pid)).collect();
        assert!(killed.elapsed() < Duration::from_secs(5), "still running 5 s after SIGKILL of up: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("all {} processes of the node gone {:?} after SIGKILL of up", children.len(), killed.elapsed());
}
