//! Routing across processes: SIGKILL during a burst, with a second routing process sharing
//! the work, leaves every case routed exactly once;
//! a rule change is picked up without a restart, and a bad one is refused.

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
