//! Escalation across two nodes on one NATS server: a district (320211) whose supervision runs
//! late and which receives a group petition, and the city (320200) whose joint-meeting office
//! receives both, acknowledges, and sends a directive back down. Both escalation services are
//! SIGKILLed mid-way; nothing is lost and nothing is recorded twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use xinfang_shared::event::Envelope;
use xinfang_tests::{city_toml, node_toml, petition, petition_by, NatsServer, TestNode};

/// Short periods so a supervision runs late within seconds.
const FAST: &str = r#"
[deadlines.periods]
acceptance = "2s"
supervision = "2s"
"#;

async fn inbox(http: &reqwest::Client, base: &str, query: &str) -> Vec<Value> {
    let r = http.get(format!("{base}/v1/escalations?{query}")).send().await.expect("list");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v["escalations"].as_array().cloned().unwrap_or_default()
}

async fn wait_inbox(http: &reqwest::Client, base: &str, pred: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        if let Some(e) = inbox(http, base, "state=all").await.into_iter().find(&pred) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("escalation never reached the city inbox: {:?}", inbox(http, base, "state=all").await);
}

fn count_ids(events: &[Envelope]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for e in events {
        *ids.entry(e.event_id.clone()).or_default() += 1;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_supervision_and_a_group_petition_reach_the_city_and_its_directive_comes_back() {
    let nats = Arc::new(NatsServer::start(false));
    let mut district = TestNode::start_node(
        nats.clone(),
        &node_toml("320211", &nats.url, FAST),
        &["routing", "deadlines", "escalation"],
    );
    let mut city = TestNode::start_node(nats.clone(), &city_toml(&nats.url), &["escalation"]);
    let office = city.service("escalation").http.clone();
    let http = district.http.clone();

    // a case nobody accepts: acceptance breach → supervision (督办) → supervision breach → city
    let (_, r) = district.submit(&petition()).await;
    let late = r["case_id"].as_str().unwrap().to_string();
    // a group petition (集体访, 5 people): straight to the city (Art. 25)
    let mut group = petition_by(7);
    group["headcount"] = json!(6);
    let (_, r) = district.submit(&group).await;
    let crowd = r["case_id"].as_str().unwrap().to_string();

    // kill the district's escalation service while it works through them
    tokio::time::sleep(Duration::from_millis(300)).await;
    district.service("escalation").restart();

    let sup = district
        .wait_for_where(&late, "escalated", Duration::from_secs(30), |e| e.data["level"] == "supervision")
        .await
        .expect("supervision");
    assert_eq!(sup.data["to"], "320211-xfj");
    assert_eq!(sup.data["step"], "acceptance");
    assert!(sup.data["due_at"].is_string(), "{}", sup.data);
    let up = district
        .wait_for_where(&late, "escalated", Duration::from_secs(30), |e| e.data["level"] == "parent")
        .await
        .expect("overdue supervision goes to the parent");
    assert_eq!(up.data["to"], "320200");
    assert_eq!(up.data["step"], "supervision");

    let from_group = wait_inbox(&http, &office, |e| e["case_id"] == crowd.as_str()).await;
    assert_eq!(from_group["level"], "parent");
    assert_eq!(from_group["from_node"], "320211");
    assert_eq!(from_group["state"], "open");
    let overdue = wait_inbox(&http, &office, |e| e["case_id"] == late.as_str() && e["step"] == "supervision").await;
    assert_eq!(overdue["id"], up.event_id.as_str(), "the inbox entry is the rung the district recorded");

    // the city's escalation service dies and comes back: once it says ready its inbox is whole
    // (what sled had not yet flushed when it died is applied again from the INBOX stream first)
    city.service("escalation").restart();
    let office = city.service("escalation").http.clone();
    let id = overdue["id"].as_str().unwrap().to_string();
    let r = http.get(format!("{office}/v1/escalations/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the escalation is in the inbox as soon as the service is ready");
    let full: Value = r.json().await.unwrap();
    assert!(full["escalation"]["snapshot"].as_array().is_some_and(|s| s.len() >= 3), "snapshot: {full}");
    // the snapshot carries the petitioners: the office's read is on record at the city
    let city_node = xinfang_shared::ids::NodeCode::parse("320200").unwrap();
    let audit = nats.jetstream().await.get_stream(xinfang_shared::subjects::audit_stream(&city_node)).await.unwrap();
    let last = audit
        .get_last_raw_message_by_subject(&xinfang_shared::subjects::audit(&city_node, "read"))
        .await
        .expect("an audit record");
    let record: Value = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!((record["what"].as_str(), record["case_id"].as_str()), (Some("escalation_view"), Some(late.as_str())));

    // acknowledge (twice: one ack) and send a directive due in a few seconds
    for _ in 0..2 {
        let r = http.post(format!("{office}/v1/escalations/{id}/ack")).json(&json!({"by": "市联席办-王"})).send().await;
        let body: Value = r.unwrap().json().await.unwrap();
        assert_eq!(body["escalation"]["state"], "acknowledged", "{body}");
    }
    let due = (chrono::Utc::now() + chrono::Duration::seconds(4)).to_rfc3339();
    let directive = json!({"text": "请于期限内受理并报告结果", "due_at": due, "by": "市联席办-王"});
    let r = http.post(format!("{office}/v1/escalations/{id}/directive")).json(&directive).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["escalation"]["state"], "directed", "{body}");
    // the same form again is the same directive
    let again: Value = http
        .post(format!("{office}/v1/escalations/{id}/directive"))
        .json(&directive)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["directive_id"], body["directive_id"]);

    // bad input: refused with a code and a field, never a 5xx
    let r = http.post(format!("{office}/v1/escalations/{id}/directive")).json(&json!({"due_days": 3})).send().await;
    let bad: Value = r.unwrap().json().await.unwrap();
    assert_eq!((bad["error"]["code"].as_str(), bad["error"]["field"].as_str()), (Some("missing_field"), Some("text")));
    let r = http.post(format!("{office}/v1/escalations/nope/ack")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // down at the district: the acknowledgement and the directive are in the ledger, and the
    // directive's due is armed like any step: it runs out and climbs again
    let got = district.wait_for(&late, "directive_received", Duration::from_secs(30)).await.expect("directive");
    assert_eq!(got.data["text"], "请于期限内受理并报告结果");
    assert_eq!(got.data["escalation_id"], id.as_str());
    district.wait_for(&late, "escalation_acknowledged", Duration::from_secs(30)).await.expect("ack recorded");
    district
        .wait_for_where(&late, "deadline_breached", Duration::from_secs(30), |e| e.data["step"] == "directive")
        .await
        .expect("the directive's due is armed and fires");
    district
        .wait_for_where(&late, "escalated", Duration::from_secs(30), |e| {
            e.data["level"] == "parent" && e.data["step"] == "directive"
        })
        .await
        .expect("an overdue directive goes up again");

    // let everything settle, then count: nothing twice, anywhere
    tokio::time::sleep(Duration::from_secs(2)).await;
    for case in [&late, &crowd] {
        let events = district.events(case).await;
        let dups: Vec<_> = count_ids(&events).into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(dups.is_empty(), "duplicated events in {case}: {dups:?}");
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert!(kinds.iter().filter(|k| **k == "directive_received").count() <= 1, "{kinds:?}");
        assert!(kinds.iter().filter(|k| **k == "escalation_acknowledged").count() <= 1, "{kinds:?}");
    }
    let all = inbox(&http, &office, "state=all").await;
    let mut ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no escalation twice in the inbox: {all:?}");
    let mut rungs = Vec::new();
    for case in [&late, &crowd] {
        let events = district.events(case).await;
        rungs.extend(
            events.into_iter().filter(|e| e.kind == "escalated" && e.data["level"] == "parent").map(|e| e.event_id),
        );
    }
    rungs.sort();
    let mut sent: Vec<String> = all.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    sent.sort();
    assert_eq!(sent, rungs, "every parent rung the district recorded is in the city inbox, once");

    // filters: by child, level and state
    assert!(inbox(&http, &office, "child=320213").await.is_empty());
    assert_eq!(inbox(&http, &office, "state=directed").await.len(), 1);
    let r = http.get(format!("{office}/v1/escalations?state=lost")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let metrics = http.get(format!("{office}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("xf_escalation_received_total{child=\"320211\",level=\"parent\"}"), "{metrics}");
    assert!(metrics.contains("xf_escalation_ack_seconds_count{child=\"320211\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_office_page_lists_an_escalation_and_acknowledges_it_in_headless_chromium() {
    let nats = Arc::new(NatsServer::start(false));
    let district = TestNode::start_node(nats.clone(), &node_toml("320211", &nats.url, ""), &["escalation"]);
    // the office's user signs in on the city's pages (services/web), which call escalation
    let password = "office-password-1";
    let user = format!(
        "\n[[auth.users]]\nlogin = \"office\"\nname = \"联席办周\"\nroles = [\"office\"]\npassword_hash = \"{}\"\n",
        xinfang_shared::access::hash_password(password)
    );
    let city = TestNode::start_node(nats.clone(), &(city_toml(&nats.url) + &user), &["escalation", "web"]);
    let api = city.others[0].1.http.clone();
    let office = city.others[1].1.http.clone();
    let mut group = petition_by(8);
    group["headcount"] = json!(12);
    group["title"] = json!("<b>十二户</b>联名反映拆迁补偿");
    let (_, r) = district.submit(&group).await;
    let case = r["case_id"].as_str().unwrap().to_string();
    let entry = wait_inbox(&district.http, &api, |e| e["case_id"] == case.as_str()).await;
    let id = entry["id"].as_str().unwrap().to_string();

    let browser = xinfang_tests::browser::Browser::start().await;
    browser.goto(&format!("{office}/escalations")).await;
    assert!(
        browser.url().await.contains("/login?next=%2Fescalations")
            || browser.url().await.contains("/login?next=/escalations"),
        "{}",
        browser.url().await
    );
    browser.type_into("input[name=\"login\"]", "office").await;
    browser.type_into("input[name=\"password\"]", password).await;
    browser.click("button[name=\"sign_in\"]").await;
    browser.await_text("#user", "联席办周（联席办）").await;
    assert!(browser.text("h1").await.contains("督办件收件箱"));
    let row = format!("tr[data-id=\"{id}\"]");
    assert!(browser.text(&row).await.contains(&case), "the row names the case");
    assert_eq!(browser.text(&format!("{row} .state")).await, "待签收");

    // 签收: a plain form post; the browser follows the redirect to the escalation's page
    browser.click(&format!("{row} button[name=\"ack\"]")).await;
    browser.await_text("#state", "已签收").await;
    assert!(browser.url().await.ends_with(&format!("/escalations/{id}")), "{}", browser.url().await);
    // the timeline shows the case as the district sent it, markup escaped
    assert!(browser.text("#timeline").await.contains("<b>十二户</b>联名反映拆迁补偿"));
    browser.goto(&format!("{office}/escalations")).await;
    assert_eq!(browser.text(&format!("{row} .state")).await, "已签收", "the list shows the new state");
    assert_eq!(browser.count(&format!("{row} button[name=\"ack\"]")).await, 0, "no second 签收");

    // 督办单 through the form; a bad one is refused on a page, not with a 5xx
    browser.goto(&format!("{office}/escalations/{id}")).await;
    browser.type_into("textarea[name=\"text\"]", "请区信访局十日内报送处理结果").await;
    browser.set_value("input[name=\"due_date\"]", "2000-01-01").await;
    browser.click("button[name=\"direct\"]").await;
    assert!(browser.text("#error").await.contains("办结期限须晚于当前时间"), "a past due date is refused");
    browser.goto(&format!("{office}/escalations/{id}")).await;
    browser.type_into("textarea[name=\"text\"]", "请区信访局十日内报送处理结果").await;
    let due = (chrono::Utc::now() + chrono::Duration::days(10)).format("%Y-%m-%d").to_string();
    browser.set_value("input[name=\"due_date\"]", &due).await;
    browser.click("button[name=\"direct\"]").await;
    browser.await_text("#state", "已督办").await;
    assert!(browser.text(".directive").await.contains("请区信访局十日内报送处理结果"));
    assert!(browser.text(".directive").await.contains("联席办周"), "signed by the user");
    browser.screenshot("office-escalation").await;
    browser.quit().await;

    district.wait_for(&case, "escalation_acknowledged", Duration::from_secs(30)).await.expect("ack travelled down");
    let d = district.wait_for(&case, "directive_received", Duration::from_secs(30)).await.expect("directive down");
    assert!(d.data["due_at"].as_str().unwrap().starts_with(&due), "{}", d.data);
}
