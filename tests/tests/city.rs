//! Issue 15: a city of nodes, each with its own nats-server and JetStream domain, the districts
//! linked to the city hub as leaf nodes through TCP proxies the test cuts. With the links cut,
//! each district goes on registering, routing and notifying; a transfer 320211 → 320213 and an
//! escalation 320211 → city made during the cut arrive once each after the heal, and the time
//! from heal to arrival is printed (docs/benchmarks.md). `XF_CUT_SECONDS` sets the cut
//! (default 30; the figure is for 120).

use std::time::{Duration, Instant};

use serde_json::json;
use xinfang_shared::ids::NodeCode;
use xinfang_shared::ledger::read_stream;
use xinfang_tests::petition_by;
use xinfang_tests::topology::{escalation_id, events_of, messages_with_id, parent_connected, submit, wait_until, City};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn districts_work_through_a_wan_cut_and_what_they_owe_arrives_once_after_the_heal() {
    let cut_for = Duration::from_secs(std::env::var("XF_CUT_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30));
    let dir = tempfile::tempdir().unwrap();
    let city = City::start(dir.path(), "").await;
    let (binhu, liangxi) = (&city.districts[0], &city.districts[1]);
    let (p11, p13) = (&city.links[0], &city.links[1]);
    let http = xinfang_tests::staff_http(Duration::from_secs(10));
    let (hub_js, binhu_js, liangxi_js) =
        (city.jetstream("320200").await, city.jetstream("320211").await, city.jetstream("320213").await);
    for d in [binhu, liangxi] {
        wait_until(Duration::from_secs(30), "leaf link up", || parent_connected(&http, d)).await;
    }

    // linked: a transfer and an escalation go through at once
    let mut elsewhere = petition_by(11);
    elsewhere["location"] = json!({"division": "320213", "address": "梁溪区崇安寺"});
    let before = submit(&http, binhu, &elsewhere).await;
    wait_until(Duration::from_secs(30), "transfer while linked", || async {
        events_of(&liangxi_js, "320213", &before, "transferred_in").await == 1
    })
    .await;

    p11.cut();
    p13.cut();
    let cut_at = Instant::now();
    for d in [binhu, liangxi] {
        wait_until(Duration::from_secs(15), "cut noticed", || async { !parent_connected(&http, d).await }).await;
    }
    // during the cut: each district registers, routes and notifies on its own
    let local_11 = submit(&http, binhu, &petition_by(21)).await;
    let mut own = petition_by(22);
    own["location"] = json!({"division": "320213", "address": "梁溪区"});
    let local_13 = submit(&http, liangxi, &own).await;
    let transfer = submit(&http, binhu, &elsewhere).await;
    let mut group = petition_by(23);
    group["headcount"] = json!(6);
    let escalated = submit(&http, binhu, &group).await;
    for (js, node, case) in [(&binhu_js, "320211", &local_11), (&liangxi_js, "320213", &local_13)] {
        wait_until(Duration::from_secs(20), "routed during the cut", || async {
            events_of(js, node, case, "routed").await == 1
        })
        .await;
        wait_until(Duration::from_secs(20), "notified during the cut", || async {
            events_of(js, node, case, "notified").await >= 1
        })
        .await;
    }
    wait_until(Duration::from_secs(20), "forwarded during the cut", || async {
        events_of(&binhu_js, "320211", &transfer, "forwarded").await == 1
    })
    .await;
    wait_until(Duration::from_secs(20), "escalated during the cut", || async {
        events_of(&binhu_js, "320211", &escalated, "escalated").await >= 1
    })
    .await;
    assert_eq!(events_of(&liangxi_js, "320213", &transfer, "transferred_in").await, 0, "nothing crosses a cut link");
    let remaining = cut_for.saturating_sub(cut_at.elapsed());
    tokio::time::sleep(remaining).await;

    p11.heal();
    p13.heal();
    let healed = Instant::now();
    let escalation_id = escalation_id(&binhu_js, "320211", &escalated).await;
    let transfer_took = wait_until(Duration::from_secs(120), "transfer after the heal", || async {
        events_of(&liangxi_js, "320213", &transfer, "transferred_in").await >= 1
    })
    .await;
    let escalation_took = wait_until(Duration::from_secs(120), "escalation after the heal", || async {
        messages_with_id(&hub_js, "XF_INBOX_320200", &escalation_id).await >= 1
    })
    .await;
    println!(
        "cut {:?}: after the heal the transfer arrived in {:.1} s, the escalation in {:.1} s (from the heal: {:.1} s)",
        cut_for,
        transfer_took.as_secs_f64(),
        escalation_took.as_secs_f64(),
        healed.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(events_of(&liangxi_js, "320213", &transfer, "transferred_in").await, 1, "the transfer once");
    assert_eq!(messages_with_id(&hub_js, "XF_INBOX_320200", &escalation_id).await, 1, "the escalation once");
    assert!(transfer_took.max(escalation_took) < Duration::from_secs(10), "catch-up within 10 s of the heal");
}

/// Publishes an event-shaped message with id `id` on `subject` through JetStream; whether it
/// was stored.
async fn js_publish(js: &async_nats::jetstream::Context, subject: &str, id: &str) -> bool {
    let mut event = xinfang_shared::fixtures::registered(id, xinfang_shared::fixtures::at(2, 9));
    event.event_id = id.to_string();
    let headers = xinfang_shared::ledger::headers(id, "registered");
    match js.publish_with_headers(subject.to_string(), headers, event.to_bytes()).await {
        Ok(ack) => matches!(tokio::time::timeout(Duration::from_secs(3), ack).await, Ok(Ok(_))),
        Err(_) => false,
    }
}

/// DESIGN.md §10: a district's leaf credential lets through only what its own node needs. From
/// 320211's own server (its link authenticates as `leaf_320211`), nothing reaches the city's
/// ledger, another district's outbox, or the city's JetStream beyond the consumers the inbox
/// needs; and a district that rewrites its own outbox to speak for another is tagged with its
/// real origin in `XF_ROUTES` and kept out of every inbox, while its own messages go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_district_credential_cannot_write_another_districts_subjects_or_the_citys_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let city = City::start(dir.path(), "").await;
    let binhu = &city.districts[0];
    let http = xinfang_tests::staff_http(Duration::from_secs(10));
    for d in &city.districts {
        wait_until(Duration::from_secs(30), "leaf link up", || parent_connected(&http, d)).await;
    }
    let (hub_js, binhu_js, liangxi_js) =
        (city.jetstream("320200").await, city.jetstream("320211").await, city.jetstream("320213").await);
    // as the district's own services connect: answers come back under the node's prefix
    let binhu_client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(xinfang_shared::runtime::inbox_prefix(&NodeCode::parse("320211").unwrap()))
        .connect(binhu.nats_url())
        .await
        .unwrap();

    // the city's JetStream answers the link probe, and nothing else of its API
    let info = binhu_client.request("$JS.xf320200.API.INFO", "".into()).await;
    assert!(info.is_ok(), "the probe of the link is allowed: {info:?}");
    for api in ["$JS.xf320200.API.STREAM.INFO.XF_CASES_320200", "$JS.xf320200.API.STREAM.DELETE.XF_CASES_320200"] {
        let r = tokio::time::timeout(Duration::from_secs(3), binhu_client.request(api, "".into())).await;
        assert!(!matches!(r, Ok(Ok(_))), "{api} must not be answered for a district: {r:?}");
    }

    // straight into the city's ledger or the other district's outbox: refused on the link
    let forged_case = "xf.320200.case.320200-20261202-999999.registered";
    assert!(!js_publish(&binhu_js, forged_case, "forged-ledger").await, "no ack from the city's ledger");
    let forged_out = "xf.320213.out.320200.escalation";
    assert!(!js_publish(&binhu_js, forged_out, "forged-outbox").await, "no ack from 320213's outbox");
    let stored = |js: async_nats::jetstream::Context, stream: &'static str, filter: &'static str| async move {
        read_stream(&js, stream, filter.to_string()).await.map(|s| s.len()).unwrap_or(0)
    };
    assert_eq!(stored(hub_js.clone(), "XF_CASES_320200", "xf.320200.case.320200-20261202-999999.>").await, 0);
    assert_eq!(stored(liangxi_js.clone(), "XF_OUTBOX_320213", "xf.320213.out.>").await, 0);

    // a district that makes its own outbox take another's subjects: what it writes there is
    // sourced into XF_ROUTES under its real origin and reaches no inbox
    let mut outbox = binhu_js.get_stream("XF_OUTBOX_320211").await.unwrap();
    let mut config = outbox.info().await.unwrap().config.clone();
    config.subjects.push("xf.320213.out.>".into());
    binhu_js.update_stream(config).await.unwrap();
    assert!(js_publish(&binhu_js, "xf.320213.out.320200.escalation", "forged-sender").await);
    assert!(js_publish(&binhu_js, "xf.320211.out.320200.escalation", "own-name").await);
    wait_until(Duration::from_secs(30), "its own message in the city's inbox", || async {
        messages_with_id(&hub_js, "XF_INBOX_320200", "own-name").await == 1
    })
    .await;
    let routes = read_stream(&hub_js, "XF_ROUTES", String::new()).await.unwrap();
    let forged: Vec<_> = routes.iter().filter(|s| s.event.event_id == "forged-sender").collect();
    assert_eq!(forged.len(), 1, "the forged message reached XF_ROUTES");
    let raw = hub_js.get_stream("XF_ROUTES").await.unwrap().get_raw_message(forged[0].seq).await.unwrap();
    assert_eq!(raw.subject.as_str(), "xfr.320211.xf.320213.out.320200.escalation", "tagged with its real origin");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (js, inbox) in [(&hub_js, "XF_INBOX_320200"), (&liangxi_js, "XF_INBOX_320213"), (&binhu_js, "XF_INBOX_320211")]
    {
        assert_eq!(messages_with_id(js, inbox, "forged-sender").await, 0, "{inbox} took a message in another's name");
    }
}
