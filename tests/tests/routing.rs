//! Routing across processes: SIGKILL during a burst, with a second routing process sharing
//! the work, leaves every case routed exactly once;
//! a rule change is picked up without a restart, and a bad one is refused; a case written to
//! before routing got its `registered` is routed from its history, once.

use std::collections::HashMap;
use std::time::Duration;

use xinfang_shared::subjects;
use xinfang_tests::{petition, petition_by, ServiceProcess, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_burst_routes_every_case_exactly_once() {
    let mut node = TestNode::start_services("", &["routing"]);
    // a second routing process shares the work (issue 18: replicas): still exactly once
    let second_dir = tempfile::tempdir().unwrap();
    let _second = ServiceProcess::start_replica("routing", &node.config, &node.nats.url, second_dir.path(), "2");
    let url = format!("{}/v1/petitions", node.intake.http);
    let submit = |n: usize| {
        let (client, url) = (node.http.clone(), url.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..n {
                let r = client.post(&url).json(&petition()).send().await.expect("submit");
                let body: serde_json::Value = r.json().await.expect("json");
                ids.push(body["case_id"].as_str().expect("receipt").to_string());
            }
            ids
        })
    };
    let burst: Vec<_> = (0..4).map(|_| submit(100)).collect();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        node.service("routing").restart(); // SIGKILL, then start again
    }
    let mut cases = Vec::new();
    for b in burst {
        cases.extend(b.await.unwrap());
    }
    let ledger = node.ledger().await;
    let filter = subjects::case_type_filter(&node.node, "routed");
    let mut routed: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        routed.clear();
        for s in ledger.read_filtered(filter.clone()).await.unwrap() {
            *routed.entry(s.event.case_id.to_string()).or_default() += 1;
        }
        if routed.len() >= cases.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(routed.len(), cases.len(), "every case routed");
    assert!(
        routed.values().all(|n| *n == 1),
        "no case routed twice: {:?}",
        routed.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    for c in &cases {
        assert_eq!(routed.get(c), Some(&1), "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_without_restart_and_bad_rules_are_refused() {
    let node = TestNode::start_services("", &["routing"]);
    let (_, r) = node.submit(&petition_by(1)).await;
    let ev = node.wait_for(r["case_id"].as_str().unwrap(), "routed", Duration::from_secs(15)).await.expect("routed");
    assert_eq!(ev.data["organ_id"], "320211-zjj");

    // a broken node file: refused, the old rules stay
    let good = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(&node.config, good.replace("organ = \"320211-zjj\"", "organ = \"nobody\"")).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, r) = node.submit(&petition_by(2)).await;
    let ev = node.wait_for(r["case_id"].as_str().unwrap(), "routed", Duration::from_secs(15)).await.expect("routed");
    assert_eq!(ev.data["organ_id"], "320211-zjj", "old rules in force");

    // a good change: housing goes to the bureau now
    std::fs::write(&node.config, good.replace("organ = \"320211-zjj\"", "organ = \"320211-xfj\"")).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, r) = node.submit(&petition_by(3)).await;
    let ev = node.wait_for(r["case_id"].as_str().unwrap(), "routed", Duration::from_secs(15)).await.expect("routed");
    assert_eq!(ev.data["organ_id"], "320211-xfj", "new rules in force: {}", ev.data);
}

/// Art. 19 ¶3: a repeat of an open case goes to the organ already handling it, even where the
/// rules would send it elsewhere. Routing reads the original as the latest event of each type
/// (issue 18); a reroute after the first routing must be what counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_goes_to_the_organ_handling_the_original() {
    use xinfang_shared::event::{Actor, Envelope, EventData, RouteMode};
    use xinfang_shared::ids::{CaseId, OrganId};
    let extra =
        "[[organs]]\nid = \"320211-gaj\"\nname = \"测试区公安分局\"\nrole = \"department\"\nnode = \"320211\"\n";
    let node = TestNode::start_with(extra);
    let (_, first) = node.submit(&petition()).await;
    let original = first["case_id"].as_str().unwrap().to_string();
    // routed by hand, twice: the rules' organ first, then (as after a decline) the police
    let ledger = node.ledger().await;
    for organ in ["320211-zjj", "320211-gaj"] {
        let routed = Envelope::new(
            ulid::Ulid::new().to_string(),
            CaseId::parse(&original).unwrap(),
            node.node.clone(),
            xinfang_shared::time::now_cst(),
            Actor::system("test-routing"),
            None,
            EventData::Routed {
                organ_id: OrganId::parse(organ).unwrap(),
                organ_name: organ.into(),
                level: "county".into(),
                mode: RouteMode::Transfer,
                assigned_due: None,
                rule_id: "by-hand".into(),
                reason: "test".into(),
            },
        );
        ledger.append(&routed, xinfang_shared::ledger::Expect::Any).await.unwrap();
    }
    let routing_dir = tempfile::tempdir().unwrap();
    let _routing = ServiceProcess::start("routing", &node.config, &node.nats.url, routing_dir.path());
    let mut repeat = String::new();
    for _ in 0..50 {
        let (_, r) = node.submit(&petition()).await;
        if r["repeat_of"] == original.as_str() {
            repeat = r["case_id"].as_str().unwrap().to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!repeat.is_empty(), "a repeat of {original} was registered");
    let routed = node.wait_for(&repeat, "routed", Duration::from_secs(10)).await.expect("the repeat is routed");
    assert_eq!(routed.data["organ_id"], "320211-gaj", "{:?}", routed.data);
    assert_eq!(routed.data["rule_id"], "repeat", "{:?}", routed.data);
}

/// Issue 18: routing decides on a `registered` event alone and appends `routed` on condition
/// that the event is still the case's latest. When something was written to the case first
/// (here a receipt, as notification writes while routing is down) the condition fails and
/// routing reads the case: routed once all the same, and counted as a read. A case nobody
/// touched is routed without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_written_to_before_routing_is_routed_from_its_history_once() {
    use xinfang_shared::event::{Actor, Envelope, EventData};
    use xinfang_shared::ids::CaseId;
    let node = TestNode::start_with("");
    let (_, r) = node.submit(&petition_by(1)).await;
    let changed = r["case_id"].as_str().unwrap().to_string();
    let registered = node.events(&changed).await.remove(0);
    let receipt = Envelope::new(
        registered.caused_id("receipt:petitioner:notified"),
        CaseId::parse(&changed).unwrap(),
        node.node.clone(),
        xinfang_shared::time::now_cst(),
        Actor::system("notification"),
        Some(registered.event_id.clone()),
        EventData::Notified {
            cause_event_id: registered.event_id.clone(),
            channel: "webhook".into(),
            recipient: "138****5678".into(),
            attempts: 1,
            notice_id: registered.caused_id("receipt:petitioner"),
            template: "receipt".into(),
        },
    );
    node.ledger().await.append(&receipt, xinfang_shared::ledger::Expect::Any).await.unwrap();

    let routing_dir = tempfile::tempdir().unwrap();
    let routing = ServiceProcess::start("routing", &node.config, &node.nats.url, routing_dir.path());
    node.wait_for(&changed, "routed", Duration::from_secs(10)).await.expect("the changed case is routed");
    let (_, r) = node.submit(&petition_by(2)).await;
    let untouched = r["case_id"].as_str().unwrap().to_string();
    node.wait_for(&untouched, "routed", Duration::from_secs(10)).await.expect("the untouched case is routed");
    for case in [&changed, &untouched] {
        let events = node.events(case).await;
        assert_eq!(events.iter().filter(|e| e.kind == "routed").count(), 1, "{case}: {events:?}");
    }
    let page = node.http.get(format!("{}/metrics", routing.http)).send().await.unwrap().text().await.unwrap();
    let reads = |why: &str| {
        let line = format!("xf_routing_case_reads_total{{why=\"{why}\"}}");
        page.lines().find_map(|l| l.strip_prefix(line.as_str())).map(|v| v.trim().to_string())
    };
    assert_eq!(reads("case_changed").as_deref(), Some("1"), "{page}");
    assert_eq!(reads("forward").as_deref(), Some("0"));
}
