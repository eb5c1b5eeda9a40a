//! The lifecycle across processes: repeats are linked and terminated matters flagged; a review
//! request goes one level up, to the parent node when the reviewing organ lives there.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use xinfang_tests::{city_toml, node_toml, petition, petition_by, NatsServer, TestNode};

async fn ok(node: &TestNode, case: &str, action: serde_json::Value) {
    let (s, b) = node.act(case, &action).await;
    assert_eq!(s, 200, "{action}: {b}");
}

/// Submits until the repeat projection has caught up and the receipt links `original`.
async fn submit_repeat(node: &TestNode, original: &str) -> serde_json::Value {
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut p = petition();
        p["idempotency_key"] = json!(ulid::Ulid::new().to_string());
        let (_, r) = node.submit(&p).await;
        if r["repeat_of"] == original {
            return r;
        }
    }
    panic!("no receipt linked to {original}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_linked_and_terminated_matters_flagged() {
    let node = TestNode::start();
    let (_, first) = node.submit(&petition()).await;
    let case = first["case_id"].as_str().unwrap().to_string();
    assert_eq!(first["repeat_of"], serde_json::Value::Null);

    let again = submit_repeat(&node, &case).await;
    let ev = node.events(again["case_id"].as_str().unwrap()).await;
    assert_eq!(ev[0].data["repeat_of"], case.as_str());
    assert_eq!(ev[0].data["terminated_matter"], false);
    // another matter of the same petitioner is not a repeat
    let mut other = petition();
    other["category"] = json!("urban_construction");
    other["location"] = json!({"division": "320211001"});
    let (_, r) = node.submit(&other).await;
    assert_eq!(r["repeat_of"], serde_json::Value::Null);

    // take the first case (and its repeat) to 终结
    let org = json!({"kind": "organ", "id": "320211-zjj"});
    let staff = json!({"kind": "staff", "id": "clerk-1"});
    let me = json!({"kind": "petitioner", "id": "self"});
    let reply = |a: &str| json!({"action": a, "actor": staff, "outcome": "not_supported", "summary": "维持原处理意见"});
    for c in [case.as_str(), again["case_id"].as_str().unwrap()] {
        node.route_by_hand(c).await;
        ok(&node, c, json!({"action": "accept", "actor": org})).await;
        ok(&node, c, json!({"action": "reply", "actor": org, "outcome": "not_supported", "summary": "不予支持"})).await;
        ok(&node, c, json!({"action": "request_review", "actor": me, "reason": "不服"})).await;
        ok(&node, c, reply("review_reply")).await;
        ok(&node, c, json!({"action": "request_rereview", "actor": me})).await;
        ok(&node, c, json!({"action": "hearing_start", "actor": staff})).await;
        ok(&node, c, json!({"action": "hearing_end", "actor": staff})).await;
        ok(&node, c, reply("rereview_reply")).await;
        assert!(node.events(c).await.iter().any(|e| e.kind == "terminated"));
    }
    // the same matter again: registered, linked, flagged for refusal with terminated_matter
    let mut late = json!(null);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, r) = node.submit(&petition()).await;
        let ev = node.events(r["case_id"].as_str().unwrap()).await;
        if ev[0].data["terminated_matter"] == true {
            late = r;
            break;
        }
    }
    assert!(late["repeat_of"].is_string(), "a petition about the terminated matter is linked and flagged");
    node.route_by_hand(late["case_id"].as_str().unwrap()).await;
    ok(
        &node,
        late["case_id"].as_str().unwrap(),
        json!({"action": "reject", "actor": org, "reason_code": "terminated_matter", "note": "已终结"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_review_request_travels_to_the_organ_one_level_up_on_the_parent_node() {
    let nats = Arc::new(NatsServer::start(false));
    let district = TestNode::start_node(nats.clone(), &node_toml("320211", &nats.url, ""), &["routing"]);
    let city = TestNode::start_node(nats.clone(), &city_toml(&nats.url), &["routing"]);
    let (_, r) = district.submit(&petition()).await;
    let case = r["case_id"].as_str().unwrap().to_string();
    let routed = district.wait_for(&case, "routed", Duration::from_secs(15)).await.expect("routed");
    assert_eq!(routed.data["organ_id"], "320211-zjj");
    let org = json!({"kind": "organ", "id": "320211-zjj"});
    ok(&district, &case, json!({"action": "accept", "actor": org})).await;
    ok(&district, &case, json!({"action": "reply", "actor": org, "outcome": "not_supported", "summary": "不予支持"}))
        .await;
    ok(&district, &case, json!({"action": "request_review", "actor": {"kind": "petitioner", "id": "self"}})).await;
    let fwd = district.wait_for(&case, "forwarded", Duration::from_secs(15)).await.expect("forwarded up");
    assert_eq!(fwd.data["to_node"], "320200");
    let routed = city
        .wait_for_where(&case, "routed", Duration::from_secs(40), |e| e.data["rule_id"] == "review")
        .await
        .expect("routed at the city");
    assert_eq!(routed.data["organ_id"], "320200-zjj", "{}", routed.data);
    // the reviewing organ answers at the city node; the case keeps its id
    let reviewer = json!({"kind": "organ", "id": "320200-zjj"});
    ok(
        &city,
        &case,
        json!({"action": "review_reply", "actor": reviewer, "outcome": "partly_supported", "summary": "部分支持"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_and_views_over_the_nats_endpoints() {
    let node = TestNode::start();
    let nc = async_nats::connect(&node.nats.url).await.unwrap();
    let ask = |subject: &'static str, body: serde_json::Value| {
        let nc = nc.clone();
        async move {
            let payload = serde_json::to_vec(&body).unwrap().into();
            let reply = nc.request_with_headers(subject, xinfang_tests::staff_headers(), payload).await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
        }
    };
    let receipt = ask("xf.320211.api.petition.submit", petition_by(900)).await;
    let case = receipt["case_id"].as_str().unwrap().to_string();
    let early = ask(
        "xf.320211.api.case.act",
        json!({"case_id": case, "action": "accept", "actor": {"kind": "staff", "id": "c"}}),
    )
    .await;
    assert_eq!(early["error"]["code"], "invalid_transition", "{early}");
    assert!(early["error"]["message"].as_str().unwrap().contains("awaiting_route"), "names the state: {early}");
    node.route_by_hand(&case).await;
    let ok = ask(
        "xf.320211.api.case.act",
        json!({"case_id": case, "action": "accept", "actor": {"kind": "organ", "id": "320211-zjj"}}),
    )
    .await;
    assert_eq!(ok["ok"], true, "{ok}");
    let staff = ask("xf.320211.api.case.get", json!({"case_id": case})).await;
    assert_eq!(staff["state"], "accepted");
    assert!(staff["due"]["handling"]["due_at"].is_string(), "{staff}");
    assert_eq!(staff["events"].as_array().unwrap().len(), 3);
    let public = ask("xf.320211.api.case.status", json!({"case_id": case, "query_code": receipt["query_code"]})).await;
    assert_eq!(public["state"], "accepted");
    assert!(!public.to_string().contains("张三") && !public.to_string().contains("13812345678"), "{public}");
    let wrong = ask("xf.320211.api.case.status", json!({"case_id": case, "query_code": "AAAAAA"})).await;
    assert_eq!(wrong["error"]["code"], "not_found");
}
