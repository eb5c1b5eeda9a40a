//! Deadlines across processes: late steps are on record, timers fire once across SIGKILL and
//! downtime, and a lost sled directory is rebuilt from the ledger without duplicates.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use xinfang_shared::subjects;
use xinfang_tests::{petition_by, TestNode};

const FAST: &str = "\n[deadlines.periods]\nacceptance = \"3s\"\n";

async fn breaches(node: &TestNode, step: &str) -> HashMap<String, usize> {
    let ledger = node.ledger().await;
    let mut out = HashMap::new();
    for s in ledger.read_filtered(subjects::case_type_filter(&node.node, "deadline_breached")).await.unwrap() {
        if s.event.data["step"] == step {
            *out.entry(s.event.case_id.to_string()).or_default() += 1;
        }
    }
    out
}

/// The acceptance breaches by case, once every one of `cases` has one (or after 20 s).
async fn acceptance_breaches_of(node: &TestNode, cases: &[String]) -> HashMap<String, usize> {
    let mut got = HashMap::new();
    for _ in 0..100 {
        got = breaches(node, "acceptance").await;
        if cases.iter().all(|c| got.contains_key(c)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_registration_is_on_record_even_though_routing_was_quick() {
    let node = TestNode::start_services(FAST, &["routing", "deadlines"]);
    let mut p = petition_by(501);
    let old = chrono::Utc::now() - chrono::Duration::days(20);
    p["received_at"] = json!(old.to_rfc3339());
    p["channel"] = json!("letter");
    let (_, r) = node.submit(&p).await;
    let case = r["case_id"].as_str().unwrap();
    let breach =
        node.wait_for_where(case, "deadline_breached", Duration::from_secs(20), |e| e.data["step"] == "route").await;
    assert!(breach.is_some(), "route breach on record");
    let warned = node
        .wait_for_where(case, "deadline_breached", Duration::from_secs(20), |e| e.data["step"] == "acceptance")
        .await;
    assert!(warned.is_some(), "the 3 s acceptance period breaches too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timers_fire_once_across_sigkill_downtime_and_a_lost_store() {
    let mut node = TestNode::start_services(FAST, &["routing", "deadlines"]);
    let mut cases = Vec::new();
    for i in 0..20 {
        let (_, r) = node.submit(&petition_by(600 + i)).await;
        cases.push(r["case_id"].as_str().unwrap().to_string());
    }
    // down while the acceptance timers come due
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.service("deadlines").sigkill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    node.service("deadlines").restart();
    let got = acceptance_breaches_of(&node, &cases).await;
    for c in &cases {
        assert_eq!(got.get(c), Some(&1), "{c}: one acceptance breach, got {got:?}");
    }
    // lose the store: the service rebuilds its timers from the ledger and fires nothing twice
    let store = node.service("deadlines").dir.join("deadlines");
    node.service("deadlines").sigkill();
    std::fs::remove_dir_all(&store).unwrap();
    node.service("deadlines").restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = breaches(&node, "acceptance").await;
    assert_eq!(again, got, "no duplicate after the rebuild");
}

/// A metric's value on a service's `/metrics` page (0 when absent).
async fn metric(url: &str, name: &str) -> f64 {
    let page = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    page.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_is_rebuilt_in_one_read_of_the_ledger_and_its_timers_still_fire_once() {
    let mut node = TestNode::start_services("\n[deadlines.periods]\nacceptance = \"8s\"\n", &["routing", "deadlines"]);
    let mut cases = Vec::new();
    for i in 0..20 {
        let (_, r) = node.submit(&petition_by(800 + i)).await;
        cases.push(r["case_id"].as_str().unwrap().to_string());
    }
    for c in &cases {
        node.wait_for(c, "routed", Duration::from_secs(10)).await.expect("routed");
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // armed
    let store = node.service("deadlines").dir.join("deadlines");
    node.service("deadlines").sigkill();
    std::fs::remove_dir_all(&store).unwrap();
    node.service("deadlines").restart();
    let url = node.service("deadlines").http.clone();
    // rebuilt before ready, from one read: every timer is back and the consumer replayed nothing
    assert_eq!(metric(&url, "xf_deadlines_store_rebuilds_total").await, 1.0);
    assert!(metric(&url, "xf_deadlines_rebuilt_events_total").await >= 40.0, "registered and routed of each case");
    assert_eq!(metric(&url, "xf_deadlines_armed_timers{step=\"acceptance\"}").await, 20.0);
    assert_eq!(metric(&url, "xf_deadlines_events_total{result=\"done\"}").await, 0.0, "no event replayed one by one");
    let got = acceptance_breaches_of(&node, &cases).await;
    for c in &cases {
        assert_eq!(got.get(c), Some(&1), "{c}: one acceptance breach after the rebuild, got {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_years_schedule_is_loaded_without_a_restart_and_moves_provisional_dues() {
    use xinfang_shared::calendar::{Calendar, Period};
    let calendars = tempfile::tempdir().unwrap();
    // a 60-day route period from today ends in a year with no shipped schedule (provisional)
    let extra = format!("\n[calendar]\npath = {:?}\n\n[deadlines.periods]\nroute = \"60d\"\n", calendars.path());
    let node = TestNode::start_services(&extra, &["deadlines"]);
    let (_, r) = node.submit(&petition_by(701)).await;
    let case = r["case_id"].as_str().unwrap().to_string();
    let registered = node.wait_for(&case, "registered", Duration::from_secs(10)).await.unwrap();
    let received = chrono::DateTime::parse_from_rfc3339(registered.data["received_at"].as_str().unwrap()).unwrap();
    let before = Calendar::shipped().due(received, Period::Days(60));
    assert!(before.provisional, "the test needs a due in an unscheduled year: {before:?}");
    assert_eq!(r["due"]["route"].as_str(), Some(xinfang_shared::time::rfc3339(before.at).as_str()));
    tokio::time::sleep(Duration::from_secs(1)).await; // armed

    // the schedule of that year arrives, with the due day inside a holiday
    let day = before.at.date_naive();
    let year = format!(
        "year = {}\nholidays = [\"{}..{}\"]\nworkdays = []\n",
        day.format("%Y"),
        day,
        day + chrono::Duration::days(2)
    );
    let mut after = Calendar::shipped();
    after.load_toml(&year).unwrap();
    let after = after.due(received, Period::Days(60));
    assert!(!after.provisional && after.at > before.at, "{after:?}");
    std::fs::write(calendars.path().join("next.toml"), &year).unwrap();

    let moved = node.wait_for(&case, "due_recomputed", Duration::from_secs(20)).await.expect("due_recomputed");
    assert_eq!(moved.data["step"], "route");
    assert_eq!(moved.data["previous_due_at"], xinfang_shared::time::rfc3339(before.at));
    assert_eq!(moved.data["due_at"], xinfang_shared::time::rfc3339(after.at));
    assert_eq!(moved.data["provisional"], false);
    // intake follows the same files: the staff view shows the due the timer now has
    let url = format!("{}/v1/cases/{case}", node.intake.http);
    let mut shown = Value::Null;
    for _ in 0..40 {
        let view: Value = node.http.get(&url).send().await.unwrap().json().await.unwrap();
        shown = view["due"]["route"].clone();
        if shown["due_at"] == moved.data["due_at"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(shown, json!({"due_at": moved.data["due_at"], "provisional": false}));
    // once: a later poll of the same files moves nothing
    tokio::time::sleep(Duration::from_secs(6)).await;
    let n = node.events(&case).await.iter().filter(|e| e.kind == "due_recomputed").count();
    assert_eq!(n, 1);
}

/// A firing cut short by a crash (its events in the ledger, its timers not yet durably
/// forgotten) and a restart after the ledger's duplicate window (shrunk here to a second): the
/// firing is looked up, not repeated; a timer it covered that never fired still fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_cut_short_by_a_crash_is_not_repeated_past_the_duplicate_window() {
    use xinfang_deadlines::metrics::Metrics;
    use xinfang_deadlines::timers::{Armed, FiringMark, Timers, FIRING_MARK};
    use xinfang_shared::calendar::Calendar;
    use xinfang_shared::dues::Policy;
    use xinfang_shared::event::Step;
    use xinfang_shared::ids::{CaseId, NodeCode};
    use xinfang_shared::ledger::Ledger;

    let nats = xinfang_tests::NatsServer::start(false);
    let js = nats.jetstream().await;
    let ledger = Ledger::open(js.clone(), NodeCode::parse("320211").unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (projection, _) = xinfang_deadlines::timers::open_store(dir.path()).unwrap();
    let metrics = Metrics::register(&prometheus::Registry::new(), &[]);
    let timers = Timers::new(ledger.clone(), projection.clone(), Calendar::shipped(), Policy::default(), metrics);
    let now = xinfang_shared::time::now_cst();
    let due = now - chrono::Duration::seconds(2);
    let (a, b) = (CaseId::parse("320211-20261127-000001").unwrap(), CaseId::parse("320211-20261127-000002").unwrap());
    let arm = |case: CaseId, seq: u64| {
        let timers = &timers;
        async move {
            timers.arm_step(seq, &case, Step::Acceptance, &Armed::new(due, due, false, None)).await.unwrap();
        }
    };
    let breaches = |case: CaseId| {
        let ledger = ledger.clone();
        async move { ledger.events(&case).await.unwrap().iter().filter(|e| e.kind == "deadline_breached").count() }
    };

    arm(a.clone(), 1).await;
    assert_eq!(timers.fire_due(now).await.unwrap(), 1);
    assert_eq!(breaches(a.clone()).await, 1);
    assert!(projection.tree().get(FIRING_MARK).unwrap().is_none(), "a finished firing leaves no mark");

    // the ledger forgets the message ids it has seen (an hour passes)
    xinfang_tests::forget_message_ids(&js, ledger.stream_name()).await;

    // what a crash two hours ago left: a's timer still in the store, b's never fired, and the
    // mark of the firing covering both
    arm(a.clone(), 2).await;
    arm(b.clone(), 3).await;
    let mark = FiringMark {
        began_ms: chrono::Utc::now().timestamp_millis() - 2 * 3_600_000,
        upto_ns: now.timestamp_nanos_opt().unwrap(),
    };
    projection.tree().insert(FIRING_MARK, serde_json::to_vec(&mark).unwrap()).unwrap();

    assert_eq!(timers.fire_due(now).await.unwrap(), 2);
    assert_eq!((breaches(a).await, breaches(b).await), (1, 1), "a not repeated, b fired");
    assert!(projection.tree().get(FIRING_MARK).unwrap().is_none());
    assert_eq!(timers.next_due(), None, "both marked fired");
    assert_eq!(timers.fire_due(now + chrono::Duration::seconds(1)).await.unwrap(), 0, "and not fired again");
    // a restart reads the same from the store
    let metrics = Metrics::register(&prometheus::Registry::new(), &[]);
    let restarted = Timers::new(ledger.clone(), projection.clone(), Calendar::shipped(), Policy::default(), metrics);
    restarted.load();
    assert_eq!(restarted.next_due(), None, "nothing left to fire after a restart");
}

/// A crash after an event's writes but before its ledger position was stored: the event is
/// applied again, and what it wrote converges — its indicator count is not added to twice
/// (the count carries the sequence it last counted), its timer is armed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_applied_again_after_a_crash_counts_once() {
    use xinfang_deadlines::metrics::Metrics;
    use xinfang_deadlines::timers::Timers;
    use xinfang_shared::calendar::Calendar;
    use xinfang_shared::consumer::{Delivery, Outcome};
    use xinfang_shared::dues::Policy;
    use xinfang_shared::fixtures;
    use xinfang_shared::ids::{CaseId, NodeCode};
    use xinfang_shared::ledger::{Expect, Ledger};

    let nats = xinfang_tests::NatsServer::start(false);
    let ledger = Ledger::open(nats.jetstream().await, NodeCode::parse("320211").unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (projection, _) = xinfang_deadlines::timers::open_store(dir.path()).unwrap();
    let metrics = Metrics::register(&prometheus::Registry::new(), &[]);
    let timers = Timers::new(ledger.clone(), projection.clone(), Calendar::shipped(), Policy::default(), metrics);
    let now = xinfang_shared::time::now_cst();
    let registered = |n: u32| {
        let mut e = fixtures::registered(&format!("crash-{n}"), now);
        e.case_id = CaseId::parse(&format!("320211-20261127-00000{n}")).unwrap();
        e
    };
    let first = registered(1);
    let seq = ledger.append(&first, Expect::Any).await.unwrap();
    let count = || {
        let v = projection.tree().get("c/petitions/none/first").unwrap().expect("counted");
        u64::from_be_bytes(v[..8].try_into().unwrap())
    };

    // what the crash left: the event's count written, its position not
    let written = [1u64.to_be_bytes(), seq.to_be_bytes()].concat();
    projection.tree().insert("c/petitions/none/first", written).unwrap();
    assert_eq!(projection.last_applied(), 0);

    let deliver = |seq, event| timers.arm(Delivery { seq, delivered: 1, event });
    assert!(matches!(deliver(seq, first.clone()).await, Outcome::Done));
    assert_eq!((count(), projection.last_applied()), (1, seq), "counted once, position stored");
    assert!(timers.next_due().is_some(), "its route timer is armed");
    // a redelivery of the same event changes nothing; the next petition counts
    assert!(matches!(deliver(seq, first).await, Outcome::Done));
    assert_eq!(count(), 1);
    let second = registered(2);
    let seq = ledger.append(&second, Expect::Any).await.unwrap();
    assert!(matches!(deliver(seq, second).await, Outcome::Done));
    assert_eq!(count(), 2);
}
