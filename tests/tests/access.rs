//! Access control end to end (DESIGN.md §11, issue 16): intake and escalation as processes on
//! a real nats-server, called over HTTP and NATS with and without credentials.

use std::time::Duration;

use serde_json::{json, Value};
use xinfang_shared::access::token_sha256;
use xinfang_tests::{call, petition_by, staff_headers, TestNode, STAFF_TOKEN};

const ZJJ: &str = "test-zjj-token";
const XFJ_DESK: &str = "test-xfj-desk-token";
const AUDITOR: &str = "test-auditor-token";
const HOTLINE: &str = "test-hotline-token";

fn tokens() -> String {
    let entry = |name: &str, token: &str, rest: &str| {
        format!("\n[[auth.tokens]]\nname = \"{name}\"\n{rest}\nsha256 = \"{}\"\n", token_sha256(token))
    };
    [
        entry("zjj-desk", ZJJ, "roles = [\"organ\"]\norgan_id = \"320211-zjj\""),
        entry("xfj-desk", XFJ_DESK, "roles = [\"organ\"]\norgan_id = \"320211-xfj\""),
        entry("audit", AUDITOR, "roles = [\"auditor\"]"),
        entry("hotline", HOTLINE, "roles = [\"integration\"]\nchannel = \"hotline_12345\""),
    ]
    .concat()
}

async fn nats(node: &TestNode, subject: &str, token: Option<&str>, body: Value) -> Value {
    let authorization = token.map(|t| format!("Bearer {t}"));
    nats_raw(node, subject, authorization.as_deref(), body).await
}

/// A NATS request with `authorization` as its header, verbatim.
async fn nats_raw(node: &TestNode, subject: &str, authorization: Option<&str>, body: Value) -> Value {
    let nc = async_nats::connect(&node.nats.url).await.unwrap();
    let payload = serde_json::to_vec(&body).unwrap().into();
    let reply = match authorization {
        Some(a) => {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Authorization", a);
            nc.request_with_headers(subject.to_string(), h, payload).await
        }
        None => nc.request(subject.to_string(), payload).await,
    };
    serde_json::from_slice(&reply.expect("reply").payload).unwrap()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_staff_endpoint_needs_credentials_and_each_role_keeps_to_its_scope() {
    let mut node = TestNode::start_services(&tokens(), &["escalation"]);
    let base = node.intake.http.clone();
    let office = node.service("escalation").http.clone();
    let (_, receipt) = node.submit(&petition_by(301)).await;
    let case = receipt["case_id"].as_str().unwrap().to_string();
    node.route_by_hand(&case).await;
    let case_url = format!("{base}/v1/cases/{case}");
    let acts = format!("{case_url}/actions");
    let accept = json!({"action": "accept"});

    // no credentials, or bad ones: 401 on every staff endpoint, HTTP and NATS
    let visit = json!(petition_by(302)
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .chain([("channel".to_string(), json!("visit"))])
        .collect::<serde_json::Map<_, _>>());
    for token in [None, Some("not-a-token")] {
        assert_eq!(call("GET", &case_url, token, None).await.0, 401);
        assert_eq!(call("POST", &acts, token, Some(accept.clone())).await.0, 401);
        assert_eq!(call("POST", &format!("{base}/v1/petitions"), token, Some(visit.clone())).await.0, 401);
        assert_eq!(call("GET", &format!("{office}/v1/escalations"), token, None).await.0, 401);
        assert_eq!(call("POST", &format!("{office}/v1/escalations/x/ack"), token, Some(json!({}))).await.0, 401);
        assert_eq!(code(&nats(&node, "xf.320211.api.case.get", token, json!({"case_id": case})).await), "unauthorized");
        let act = json!({"case_id": case, "action": "accept"});
        assert_eq!(code(&nats(&node, "xf.320211.api.case.act", token, act).await), "unauthorized");
        assert_eq!(code(&nats(&node, "xf.320211.api.petition.submit", token, visit.clone()).await), "unauthorized");
        assert_eq!(code(&nats(&node, "xf.320211.api.escalation.list", token, json!({})).await), "unauthorized");
        let ack = json!({"id": "x"});
        assert_eq!(code(&nats(&node, "xf.320211.api.escalation.ack", token, ack).await), "unauthorized");
        assert_eq!(call("GET", &format!("{base}/v1/cases"), token, None).await.0, 401);
        assert_eq!(call("GET", &format!("{base}/v1/node/overview"), token, None).await.0, 401);
        assert_eq!(code(&nats(&node, "xf.320211.api.case.list", token, json!({})).await), "unauthorized");
        assert_eq!(code(&nats(&node, "xf.320211.api.node.overview", token, json!({})).await), "unauthorized");
        // a session that does not exist is no better than no credentials
        let session = Some("Session AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(code(&nats_raw(&node, "xf.320211.api.case.list", session, json!({})).await), "unauthorized");
    }
    // worklists keep to the caller's scope: the organ lists its case, another organ does not,
    // an integration may not list, and only the bureau and auditors see the overview
    let listed = |v: &Value| v["cases"].as_array().is_some_and(|c| c.iter().any(|x| x["case_id"] == case.as_str()));
    let mut seen = false;
    for _ in 0..50 {
        let (s, v) = call("GET", &format!("{base}/v1/cases"), Some(ZJJ), None).await;
        assert_eq!(s, 200, "{v}");
        if listed(&v) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the organ's worklist has its case");
    let (_, v) = call("GET", &format!("{base}/v1/cases"), Some(XFJ_DESK), None).await;
    assert!(!listed(&v), "another organ's worklist does not: {v}");
    assert!(listed(&nats(&node, "xf.320211.api.case.list", Some(AUDITOR), json!({})).await));
    assert_eq!(call("GET", &format!("{base}/v1/cases"), Some(HOTLINE), None).await.0, 403);
    assert_eq!(call("GET", &format!("{base}/v1/node/overview"), Some(ZJJ), None).await.0, 403);
    let (s, v) = call("GET", &format!("{base}/v1/node/overview"), Some(AUDITOR), None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["by_organ"]["320211-zjj"]["with_organ"].as_i64().is_some_and(|n| n >= 1), "{v}");
    // the public may still submit online
    assert_eq!(call("POST", &format!("{base}/v1/petitions"), None, Some(petition_by(303))).await.0, 201);

    // another organ's case is not found, over HTTP and NATS
    let (s, v) = call("GET", &case_url, Some(XFJ_DESK), None).await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    assert_eq!(call("POST", &acts, Some(XFJ_DESK), Some(accept.clone())).await.0, 404);
    assert_eq!(
        code(&nats(&node, "xf.320211.api.case.get", Some(XFJ_DESK), json!({"case_id": case})).await),
        "not_found"
    );
    // an organ credential naming another organ as actor is forbidden
    let as_xfj = json!({"action": "accept", "actor": {"kind": "organ", "id": "320211-xfj"}});
    let (s, v) = call("POST", &acts, Some(ZJJ), Some(as_xfj)).await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    // an auditor reads (masked) and may not act
    let (s, v) = call("GET", &case_url, Some(AUDITOR), None).await;
    assert_eq!(s, 200, "{v}");
    let text = v.to_string();
    assert!(!text.contains(&xinfang_tests::id_number(301)) && !text.contains("13812345678"), "masked: {text}");
    let (s, v) = call("POST", &acts, Some(AUDITOR), Some(accept.clone())).await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    assert_eq!(
        code(&nats(&node, "xf.320211.api.escalation.ack", Some(AUDITOR), json!({"id": "x"})).await),
        "forbidden"
    );
    // an integration submits on its channel only
    let hotline = json!(petition_by(304)
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .chain([("channel".to_string(), json!("hotline_12345"))])
        .collect::<serde_json::Map<_, _>>());
    assert_eq!(call("POST", &format!("{base}/v1/petitions"), Some(HOTLINE), Some(hotline)).await.0, 201);
    let (s, v) = call("POST", &format!("{base}/v1/petitions"), Some(HOTLINE), Some(visit.clone())).await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    assert_eq!(call("GET", &case_url, Some(HOTLINE), None).await.0, 403);

    // the organ acts on its own case as itself: the actor on record is its organ
    let (s, v) = call("GET", &case_url, Some(ZJJ), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call("POST", &acts, Some(ZJJ), Some(accept)).await;
    assert_eq!(s, 200, "{v}");
    let accepted = node.wait_for(&case, "accepted", Duration::from_secs(5)).await.expect("accepted");
    assert_eq!((accepted.actor.id.as_str(), accepted.recorded_by.clone()), ("320211-zjj", None));
    // the bureau records a reply on the organ's behalf: both are on record
    let reply = json!({"case_id": case, "action": "reply", "actor": {"kind": "organ", "id": "320211-zjj"},
        "outcome": "supported", "summary": "已督促物业维修电梯"});
    let headers = staff_headers();
    let nc = async_nats::connect(&node.nats.url).await.unwrap();
    let r = nc
        .request_with_headers("xf.320211.api.case.act", headers, serde_json::to_vec(&reply).unwrap().into())
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let replied = node.wait_for(&case, "replied", Duration::from_secs(5)).await.expect("replied");
    assert_eq!(replied.actor.id, "320211-zjj");
    assert_eq!(replied.recorded_by.map(|a| a.id), Some("tests".to_string()));
    let _ = STAFF_TOKEN;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_acts_with_its_query_code_and_cannot_walk_the_codes() {
    let node = TestNode::start();
    let base = node.intake.http.clone();
    let (_, receipt) = node.submit(&petition_by(311)).await;
    let case = receipt["case_id"].as_str().unwrap().to_string();
    let query_code = receipt["query_code"].as_str().unwrap().to_string();
    let acts = format!("{base}/v1/cases/{case}/actions");
    // the petitioner's own action needs the case's query code; a staff action needs staff
    let withdraw = |code: &str| json!({"action": "withdraw", "reason": "已自行协商解决", "query_code": code});
    assert_eq!(call("POST", &acts, None, Some(json!({"action": "accept"}))).await.0, 401);
    assert_eq!(call("POST", &acts, None, Some(json!({"action": "withdraw"}))).await.0, 404);
    assert_eq!(call("POST", &acts, None, Some(withdraw("ZZZZZZ"))).await.0, 404);
    let organ = json!({"action": "withdraw", "query_code": query_code, "actor": {"kind": "organ", "id": "320211-zjj"}});
    assert_eq!(call("POST", &acts, None, Some(organ)).await.0, 403);
    let (s, v) = call("POST", &acts, None, Some(withdraw(&query_code))).await;
    assert_eq!(s, 200, "{v}");
    let closed = node.wait_for(&case, "closed", Duration::from_secs(5)).await.expect("withdrawn");
    assert_eq!(closed.actor.kind, xinfang_shared::event::ActorKind::Petitioner);
    // 50 wrong query codes from one address: refused with 429 before the 50th
    let mut first_429 = None;
    for i in 0..50 {
        let url = format!("{base}/v1/cases/{case}/status?query_code=WRONG{i:02}");
        let (s, v) = call("GET", &url, None, None).await;
        if s == 429 {
            assert_eq!(code(&v), "rate_limited");
            first_429 = Some(i);
            break;
        }
        assert_eq!(s, 404, "{v}");
    }
    assert!(first_429.is_some_and(|i| i < 49), "no 429 within 50 wrong codes: {first_429:?}");
    // even the right code is refused while the address is over its rate; staff are not limited
    let right = format!("{base}/v1/cases/{case}/status?query_code={query_code}");
    assert_eq!(call("GET", &right, None, None).await.0, 429);
    assert_eq!(call("GET", &right, Some(STAFF_TOKEN), None).await.0, 200);
}

/// Reads every message of `stream` as text.
async fn stream_texts(js: &async_nats::jetstream::Context, stream: &str) -> Vec<String> {
    use futures::StreamExt;
    let stream = js.get_stream(stream).await.expect("stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("consumer");
    let pending = stream.cached_info().state.messages as usize;
    let mut out = Vec::new();
    let mut messages = consumer.messages().await.expect("messages");
    while out.len() < pending {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next()).await.expect("in time");
        out.push(String::from_utf8_lossy(&m.expect("message").expect("ok").payload).to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_and_id_numbers_are_kept_keyed_or_sealed_and_staff_reads_are_audited() {
    let node = TestNode::start_with(&tokens());
    let mut p = petition_by(321);
    p["idempotency_key"] = json!("kiosk-9-000001");
    let (s, receipt) = node.submit(&p).await;
    assert_eq!(s, 201, "{receipt}");
    let (case, query_code) = (receipt["case_id"].as_str().unwrap(), receipt["query_code"].as_str().unwrap());
    // a retry gets the same receipt back, its code opened from the sealed record
    let (s, again) = node.submit(&p).await;
    assert_eq!((s, &again["query_code"]), (200, &receipt["query_code"]), "{again}");
    // at rest: the ledger holds keyed hashes, the buckets sealed codes, none the plaintext
    let js = node.nats.jetstream().await;
    let registered = node.wait_for(case, "registered", Duration::from_secs(5)).await.expect("registered");
    assert!(registered.data["query_code_hash"].as_str().unwrap().starts_with("h1."), "{:?}", registered.data);
    assert!(registered.data["petitioner_keys"][0].as_str().unwrap().starts_with("h1."));
    // the code for the receipt notice is sealed in the event itself (issue 18: one write)
    assert!(registered.data["query_code_sealed"].as_str().unwrap().starts_with("s1."), "{:?}", registered.data);
    for stream in ["KV_XF_IDEM_320211", "XF_CASES_320211"] {
        let texts = stream_texts(&js, stream).await;
        assert!(!texts.is_empty(), "{stream} has the record");
        for t in texts {
            assert!(!t.contains(query_code), "{stream} holds the plaintext code: {t}");
        }
    }
    assert!(js.get_stream("KV_XF_CODES_320211").await.is_err(), "no second write of the code");
    let status = format!("{}/v1/cases/{case}/status?query_code={}", node.intake.http, query_code.to_lowercase());
    assert_eq!(call("GET", &status, None, None).await.0, 200, "the code verifies against its keyed hash");
    // a repeat by the same petitioner is still found through the keyed petitioner key
    let mut linked = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, repeat) = node.submit(&petition_by(321)).await;
        linked = repeat["repeat_of"].clone();
        if !linked.is_null() {
            break;
        }
    }
    assert!(linked.is_string(), "a repeat is linked to an earlier case of the petitioner");
    // staff reads of personal data are on record; an auditor's masked read is not
    let case_url = format!("{}/v1/cases/{case}", node.intake.http);
    assert_eq!(call("GET", &case_url, Some(STAFF_TOKEN), None).await.0, 200);
    assert_eq!(call("GET", &case_url, Some(AUDITOR), None).await.0, 200);
    let audit = stream_texts(&js, "XF_AUDIT_320211").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    let record: Value = serde_json::from_str(&audit[0]).unwrap();
    assert_eq!((record["who"].as_str(), record["case_id"].as_str()), (Some("tests"), Some(case)), "{record}");
}
