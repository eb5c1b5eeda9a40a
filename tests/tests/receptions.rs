//! Leaders' reception days, 包案 and campaigns (DESIGN.md §14) through intake's HTTP API on a
//! real nats-server: a schedule published, seats booked by the public (a new petition and an
//! existing case), a full slot and a begun one refused, the reception recorded, the case
//! routed and handled, a leader in charge of it, and the campaign counting it settled once
//! the petitioner is satisfied.

use std::time::Duration;

use serde_json::{json, Value};
use xinfang_shared::access::token_sha256;
use xinfang_tests::{call, petition_by, TestNode};

const ZJJ: &str = "test-receptions-zjj-token";

fn tokens() -> String {
    format!(
        "\n[[auth.tokens]]\nname = \"zjj-desk\"\nroles = [\"organ\"]\norgan_id = \"320211-zjj\"\nsha256 = \"{}\"\n",
        token_sha256(ZJJ)
    )
}

fn staff() -> Option<&'static str> {
    Some(xinfang_tests::STAFF_TOKEN)
}

fn in_days(days: i64, hour: u32) -> String {
    let day =
        chrono::Utc::now().with_timezone(&xinfang_shared::time::cst()).date_naive() + chrono::Duration::days(days);
    format!("{day}T{hour:02}:00:00+08:00")
}

fn leader() -> Value {
    json!({"name": "张明", "title": "区长"})
}

fn field(v: &Value) -> (&str, &str) {
    (v["error"]["code"].as_str().unwrap_or_default(), v["error"]["field"].as_str().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reception_day_from_the_schedule_to_a_settled_campaign_case() {
    let node = TestNode::start_services(&tokens(), &["routing", "notification"]);
    let base = node.intake.http.clone();

    // the bureau publishes a slot; publishing it again is the same slot
    let slot = json!({"leader": leader(), "starts_at": in_days(3, 9), "ends_at": in_days(3, 11),
                      "place": "区信访局接待大厅", "topics": ["城乡建设", "物业"], "capacity": 2});
    let (s, v) = call("POST", &format!("{base}/v1/receptions"), staff(), Some(slot.clone())).await;
    assert_eq!(s, 201, "{v}");
    let rid = v["reception_id"].as_str().unwrap().to_string();
    let (_, again) = call("POST", &format!("{base}/v1/receptions"), staff(), Some(slot.clone())).await;
    assert_eq!(again["reception_id"], rid.as_str());
    assert_eq!(call("POST", &format!("{base}/v1/receptions"), None, Some(slot.clone())).await.0, 401);
    let (s, v) = call("POST", &format!("{base}/v1/receptions"), Some(ZJJ), Some(slot.clone())).await;
    assert_eq!((s, field(&v).0), (403, "forbidden"), "an organ does not keep the schedule");

    // the public reads the schedule
    let (s, v) = call("GET", &format!("{base}/v1/receptions"), None, None).await;
    assert_eq!(s, 200, "{v}");
    let listed = v["receptions"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{v}");
    assert_eq!((listed[0]["seats_left"].as_u64(), listed[0]["leader"]["name"].as_str()), (Some(2), Some("张明")));

    // 约访 with a new petition: registered on the leader_reception channel, booked
    let book = format!("{base}/v1/receptions/{rid}/appointments");
    let (s, v) = call("POST", &book, None, Some(json!({"petition": petition_by(501)}))).await;
    assert_eq!(s, 201, "{v}");
    let case = v["case_id"].as_str().unwrap().to_string();
    let code = v["query_code"].as_str().unwrap().to_string();
    let appointment = v["appointment_id"].as_str().unwrap().to_string();
    assert_eq!(appointment, format!("{rid}-001"));
    let (_, retry) = call("POST", &book, None, Some(json!({"petition": petition_by(501)}))).await;
    assert_eq!((retry["case_id"].as_str(), retry["appointment_id"].as_str()), (Some(&*case), Some(&*appointment)));
    let registered = node.wait_for(&case, "registered", Duration::from_secs(5)).await.expect("registered");
    assert_eq!(registered.data["channel"], "leader_reception");
    let booked = node.wait_for(&case, "appointment_booked", Duration::from_secs(5)).await.expect("booked");
    assert_eq!(booked.data["leader"]["name"], "张明");

    // 约访 with an existing case and its query code
    let (s, other) = call("POST", &format!("{base}/v1/petitions"), None, Some(petition_by(502))).await;
    assert_eq!(s, 201, "{other}");
    let (other_case, other_code) = (other["case_id"].as_str().unwrap(), other["query_code"].as_str().unwrap());
    let (s, v) = call("POST", &book, None, Some(json!({"case_id": other_case, "query_code": "WRONG1"}))).await;
    assert_eq!(s, 404, "a wrong code finds no case: {v}");
    let (s, v) = call("POST", &book, None, Some(json!({"case_id": other_case, "query_code": other_code}))).await;
    assert_eq!((s, v["appointment_id"].as_str()), (201, Some(&*format!("{rid}-002"))), "{v}");

    // the slot is full: a clear error naming the reception, and nothing registered
    let (s, v) = call("POST", &book, None, Some(json!({"petition": petition_by(503)}))).await;
    assert_eq!((s, field(&v)), (400, ("invalid_field", "reception")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("已约满"), "{v}");
    let (_, v) = call("GET", &format!("{base}/v1/receptions"), None, None).await;
    assert_eq!(v["receptions"][0]["seats_left"], 0);
    let (s, retry) = call("POST", &book, None, Some(json!({"petition": petition_by(501)}))).await;
    assert_eq!((s, retry["appointment_id"].as_str()), (201, Some(&*appointment)), "a retry keeps its seat: {retry}");

    // a slot that has begun takes no booking
    let soon = chrono::Utc::now().with_timezone(&xinfang_shared::time::cst()) + chrono::Duration::seconds(2);
    let begun = json!({"leader": {"name": "李华", "title": "副区长"}, "starts_at": soon.to_rfc3339(),
                       "ends_at": (soon + chrono::Duration::hours(2)).to_rfc3339(), "place": "街道便民服务中心",
                       "capacity": 10});
    let (s, v) = call("POST", &format!("{base}/v1/receptions"), staff(), Some(begun)).await;
    assert_eq!(s, 201, "{v}");
    let begun_id = v["reception_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (s, v) = call(
        "POST",
        &format!("{base}/v1/receptions/{begun_id}/appointments"),
        None,
        Some(json!({"petition": petition_by(504)})),
    )
    .await;
    assert_eq!((s, field(&v)), (400, ("invalid_field", "reception")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("已开始"), "{v}");
    let (s, v) =
        call("POST", &format!("{base}/v1/receptions/R20990101-00000000/appointments"), None, Some(json!({}))).await;
    assert_eq!((s, field(&v).0), (404, "not_found"), "{v}");

    // the record is due (a timer) until the clerk makes it
    let (_, view) = call("GET", &format!("{base}/v1/cases/{case}"), staff(), None).await;
    assert!(view["due"]["reception"]["due_at"].is_string(), "{view}");

    // the clerk records the reception: the receiving leader is on the case
    let record = format!("{book}/{appointment}");
    let (s, v) = call("POST", &record, staff(), Some(json!({"attended": true}))).await;
    assert_eq!((s, field(&v)), (400, ("invalid_field", "outcome")), "{v}");
    let (s, v) =
        call("POST", &record, staff(), Some(json!({"attended": true, "outcome": "责成区住建局两周内修复电梯"}))).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call("POST", &record, staff(), Some(json!({"attended": true, "outcome": "再记一次"}))).await;
    assert_eq!((s, field(&v).0), (409, "invalid_transition"), "recorded once: {v}");
    let (s, v) = call("GET", &book, staff(), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["appointments"][0]["recorded"]["attended"], true, "{v}");
    assert!(v["appointments"][1]["recorded"].is_null(), "{v}");

    // the petitioner was told of the appointment and of the reception (the file sink here)
    for template in ["appointment_notice", "reception_notice"] {
        let told = |e: &xinfang_shared::event::Envelope| e.data["template"] == template;
        let notified = node.wait_for_where(&case, "notified", Duration::from_secs(15), told).await;
        assert!(notified.is_some(), "{template} delivered");
    }

    // routed, accepted and answered by the organ
    node.wait_for(&case, "routed", Duration::from_secs(15)).await.expect("routed");
    let acts = format!("{base}/v1/cases/{case}/actions");
    assert_eq!(call("POST", &acts, Some(ZJJ), Some(json!({"action": "accept"}))).await.0, 200);

    // 包案: the bureau puts a leader in charge; an organ may not; a handover names the previous one
    let (s, v) = call("POST", &acts, Some(ZJJ), Some(json!({"action": "take_charge", "leader": leader()}))).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = call(
        "POST",
        &acts,
        staff(),
        Some(json!({"action": "take_charge", "leader": {"name": "王强", "title": "副区长"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call("POST", &acts, staff(), Some(json!({"action": "take_charge", "leader": leader()}))).await;
    assert_eq!(s, 200, "{v}");
    let handover = node
        .wait_for_where(&case, "leader_in_charge", Duration::from_secs(5), |e| e.data["leader"]["name"] == "张明")
        .await;
    let handover = handover.expect("handover");
    assert_eq!(handover.data["previous"]["name"], "王强", "{handover:?}");
    let (s, v) = call("POST", &acts, staff(), Some(json!({"action": "take_charge", "leader": leader()}))).await;
    assert_eq!((s, field(&v)), (400, ("invalid_field", "leader")), "{v}");
    let (_, view) = call("GET", &format!("{base}/v1/cases/{case}"), staff(), None).await;
    assert_eq!((view["leader"]["name"].as_str(), view["received_by"]["name"].as_str()), (Some("张明"), Some("张明")));
    assert!(view["due"].get("reception").is_none(), "recorded: {view}");
    let (_, inbox) = call("GET", &format!("{base}/v1/cases"), Some(ZJJ), None).await;
    let line = inbox["cases"].as_array().unwrap().iter().find(|c| c["case_id"] == case.as_str()).cloned();
    assert_eq!(line.map(|l| l["leader"].clone()), Some(json!("张明（区长）")), "{inbox}");

    // the campaign: opened, the case marked (once), its progress
    let (s, v) = call(
        "POST",
        &format!("{base}/v1/campaigns"),
        staff(),
        Some(
            json!({"name": "信访突出问题攻坚化解", "starts_on": in_days(-30, 0)[..10], "ends_on": in_days(300, 0)[..10],
                    "target_settled_rate": 0.9}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let cid = v["campaign_id"].as_str().unwrap().to_string();
    let mark = format!("{base}/v1/campaigns/{cid}/cases");
    let (s, v) = call("POST", &mark, staff(), Some(json!({"case_ids": [case, "320211-20000101-000999"]}))).await;
    assert_eq!((s, field(&v)), (404, ("not_found", "case_ids[1]")), "a typo marks nothing: {v}");
    let (s, v) = call("POST", &mark, staff(), Some(json!({"case_ids": [case]}))).await;
    assert_eq!((s, v["marked"].as_u64()), (200, Some(1)), "{v}");
    let (_, v) = call("POST", &mark, staff(), Some(json!({"case_ids": [case]}))).await;
    assert_eq!((v["marked"].as_u64(), v["already"].as_u64()), (Some(0), Some(1)), "{v}");
    assert_eq!(call("GET", &format!("{base}/v1/campaigns/{cid}"), None, None).await.0, 401);
    let progress = |v: &Value| v["progress"].clone();
    let (s, v) = call("GET", &format!("{base}/v1/campaigns/{cid}"), staff(), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((progress(&v)["cases"].as_u64(), progress(&v)["settled"].as_u64()), (Some(1), Some(0)), "{v}");

    // replied, and the petitioner is satisfied: settled
    let reply = json!({"action": "reply", "outcome": "supported", "summary": "电梯已修复并通过检验"});
    assert_eq!(call("POST", &acts, Some(ZJJ), Some(reply)).await.0, 200);
    let evaluate = json!({"action": "evaluate", "satisfaction": "satisfied", "query_code": code});
    let (s, v) = call("POST", &acts, None, Some(evaluate)).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = call("GET", &format!("{base}/v1/campaigns/{cid}"), staff(), None).await;
    let p = progress(&v);
    assert_eq!(
        (p["settled"].as_u64(), p["settled_rate"].as_f64(), p["satisfaction_rate"].as_f64()),
        (Some(1), Some(1.0), Some(1.0)),
        "{v}"
    );
    assert_eq!(p["by_leader"]["张明（区长）"]["settled"], 1, "{v}");
    assert_eq!(p["by_district"]["320211"]["cases"], 1, "{v}");
    assert_eq!(v["cases"][0]["settled"], true);

    // the figures for the dashboards: the campaign's, and this year's receptions
    let metrics =
        |base: String| async move { reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap() };
    let text = metrics(base.clone()).await;
    assert!(text.contains(&format!("xf_campaign_settled{{campaign=\"{cid}\",district=\"320211\"}} 1")), "{text}");
    // the booked slot's year (the begun one's may differ at the turn of a year)
    let year = &in_days(3, 9)[..4];
    let mut seen = String::new();
    for _ in 0..50 {
        seen = metrics(base.clone()).await;
        if seen.contains(&format!("xf_reception_appointments{{outcome=\"attended\",year=\"{year}\"}} 1")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains(&format!("xf_reception_appointments{{outcome=\"pending\",year=\"{year}\"}} 1")), "{seen}");
    assert!(seen.contains(&format!("xf_reception_slots{{year=\"{year}\"}}")), "{seen}");

    // the public timeline shows the booking, never the leader's decision text
    let (_, status) = call("GET", &format!("{base}/v1/cases/{case}/status?query_code={code}"), None, None).await;
    let text = status.to_string();
    assert!(text.contains("已预约领导接访") && !text.contains("两周内修复"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reception_day_is_published_booked_recorded_and_counted_in_chromium() {
    use xinfang_tests::browser::{sign_in, sign_out, until_listed, Browser};
    use xinfang_tests::{page_users, ServiceProcess};
    let node = TestNode::start_services(&page_users("", ""), &["routing"]);
    let web = ServiceProcess::start("web", &node.config, &node.nats.url, node.intake.dir.as_path());
    let base = web.http.clone();
    let browser = Browser::start().await;

    // the clerk publishes a reception day
    sign_in(&browser, &base, "clerk").await;
    browser.goto(&format!("{base}/agenda")).await;
    browser.type_into("input[name=\"leader.name\"]", "张明").await;
    browser.type_into("input[name=\"leader.title\"]", "区长").await;
    browser.set_value("input[name=\"date\"]", &in_days(3, 0)[..10]).await;
    browser.set_value("input[name=\"starts\"]", "09:00").await;
    browser.set_value("input[name=\"ends\"]", "11:30").await;
    browser.type_into("input[name=\"place\"]", "区信访局接待大厅").await;
    browser.type_into("input[name=\"topics\"]", "城乡建设、物业管理").await;
    browser.click("button[name=\"publish\"]").await;
    assert!(browser.text("#notice").await.starts_with("已发布：R"));
    browser.screenshot("agenda").await;
    sign_out(&browser).await;

    // the public reads the schedule and books with a new petition
    browser.goto(&format!("{base}/receptions")).await;
    assert!(browser.text("#receptions").await.contains("张明（区长）"));
    browser.screenshot("receptions").await;
    browser.click("#receptions a").await;
    browser.type_into("input[name=\"petitioners[0].name\"]", "李四").await;
    browser.type_into("input[name=\"petitioners[0].phone\"]", "13912345678").await;
    browser.type_into("input[name=\"title\"]", "老旧小区加装电梯补贴未兑现").await;
    browser.type_into("textarea[name=\"content\"]", "去年申请的加装电梯补贴至今未兑现，请领导协调。").await;
    browser.screenshot("book").await;
    browser.click("button[name=\"book\"]").await;
    let appointment = browser.text("#appointment_id").await;
    let case = browser.text("#case_id").await;
    let code = browser.text("#query_code").await;
    assert!(appointment.ends_with("-001") && case.starts_with("320211-") && code.len() == 6, "{appointment} {case}");
    browser.screenshot("booked").await;
    let registered = node.wait_for(&case, "registered", Duration::from_secs(5)).await.expect("registered");
    assert_eq!(registered.data["channel"], "leader_reception");

    // the clerk records the reception, puts the leader in charge, and opens a campaign with it
    sign_in(&browser, &base, "clerk").await;
    browser.goto(&format!("{base}/agenda")).await;
    browser.click("#receptions a").await;
    browser
        .type_into(
            &format!("tr[data-appointment=\"{appointment}\"] input[name=\"outcome\"]"),
            "责成区住建局一个月内兑现补贴",
        )
        .await;
    browser.click(&format!("tr[data-appointment=\"{appointment}\"] button[name=\"record\"]")).await;
    assert!(browser.text(".recorded").await.starts_with("已接待：责成区住建局"));
    browser.screenshot("reception-record").await;
    browser.goto(&format!("{base}/cases/{case}")).await;
    browser.type_into("#act-take_charge input[name=\"leader.name\"]", "张明").await;
    browser.type_into("#act-take_charge input[name=\"leader.title\"]", "区长").await;
    browser.click("button[name=\"take_charge\"]").await;
    browser.await_text("#leader", "张明（区长）").await;
    assert_eq!(browser.text("#received_by").await, "张明（区长）");
    browser.goto(&format!("{base}/campaigns")).await;
    browser.type_into("input[name=\"name\"]", "信访突出问题攻坚化解").await;
    browser.set_value("input[name=\"starts_on\"]", &in_days(-30, 0)[..10]).await;
    browser.set_value("input[name=\"ends_on\"]", &in_days(300, 0)[..10]).await;
    browser.click("button[name=\"open\"]").await;
    browser.await_text("#campaign", "信访突出问题攻坚化解").await;
    browser.type_into("textarea[name=\"case_ids\"]", &case).await;
    browser.click("button[name=\"mark\"]").await;
    browser.await_text("#cases", "1").await;
    let campaign_url = browser.url().await.split('?').next().unwrap_or_default().to_string();
    assert_eq!(browser.text("#settled").await, "0");

    // the organ answers; the petitioner is satisfied; the campaign counts it settled
    node.wait_for(&case, "routed", Duration::from_secs(15)).await.expect("routed");
    node.act(&case, &json!({"action": "accept"})).await;
    let (s, v) = node.act(&case, &json!({"action": "reply", "outcome": "supported", "summary": "补贴已兑现"})).await;
    assert_eq!(s, 200, "{v}");
    let evaluate = json!({"action": "evaluate", "satisfaction": "satisfied", "query_code": code});
    assert_eq!(
        call("POST", &format!("{}/v1/cases/{case}/actions", node.intake.http), None, Some(evaluate)).await.0,
        200
    );
    until_listed(&browser, &campaign_url, "#settled", "1").await;
    assert!(browser.text("#settled_rate").await.starts_with("100%"), "{}", browser.text("#settled_rate").await);
    assert!(browser.text("#by_leader").await.contains("张明（区长）"));
    browser.screenshot("campaign").await;
    // the view of every district's figures (this node alone here: no district reports to it)
    browser.goto(&format!("{base}/city")).await;
    let row = browser.text("#city_campaigns tr[data-node=\"320211\"]").await;
    assert!(row.contains("信访突出问题攻坚化解") && row.contains("100%"), "{row}");
    assert!(browser.text("#city_receptions").await.contains("测试区（320211）"));
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_whose_booking_a_crash_left_unrecorded_is_recorded_on_its_case_once() {
    use xinfang_shared::agenda::Agenda;
    use xinfang_shared::event::Actor;
    use xinfang_shared::ids::{CaseId, NodeCode};
    let node = TestNode::start_with("");
    let base = node.intake.http.clone();
    let slot = json!({"leader": leader(), "starts_at": in_days(3, 9), "ends_at": in_days(3, 11),
                      "place": "区信访局接待大厅", "capacity": 5});
    let (_, v) = call("POST", &format!("{base}/v1/receptions"), staff(), Some(slot)).await;
    let rid = v["reception_id"].as_str().unwrap().to_string();
    let (_, receipt) = call("POST", &format!("{base}/v1/petitions"), None, Some(petition_by(601))).await;
    let case = receipt["case_id"].as_str().unwrap().to_string();

    // the seat in the agenda, nothing on the case: an intake killed between the two writes
    let agenda = Agenda::open(node.nats.jetstream().await, NodeCode::parse("320211").unwrap(), 0).await.unwrap();
    let held = agenda.slot(&rid).await.unwrap().expect("published");
    let appointment = xinfang_shared::reception::appointment_id(&rid, 1);
    let now = xinfang_shared::time::now_cst();
    agenda.book(&held, &appointment, 1, &CaseId::parse(&case).unwrap(), Actor::system("test"), now).await.unwrap();
    // (not asserted that the case has no `appointment_booked` yet: the refresh that publishing
    // the slot asked for runs in the background and may already find the seat from here on)

    // the next refresh of the figures (here forced by reading the city view) records it, once
    for _ in 0..2 {
        assert_eq!(call("GET", &format!("{base}/v1/city/figures"), staff(), None).await.0, 200);
    }
    let booked = node.wait_for(&case, "appointment_booked", Duration::from_secs(5)).await.expect("recorded");
    assert_eq!(booked.data["appointment_id"], appointment.as_str());
    let count = node.events(&case).await.iter().filter(|e| e.kind == "appointment_booked").count();
    assert_eq!(count, 1);
    let (_, v) = call("GET", &format!("{base}/v1/receptions"), None, None).await;
    assert_eq!(v["receptions"][0]["seats_left"], 4);
}
