//! Issue 15: the hub as a cluster of three nats-servers (DESIGN.md §10). Each member is run by
//! `xinfang up` from the hub's node file with its own `[nats.cluster]` place; member `a` runs
//! the city's services too, `b` and `c` only their server (`--nats-only`). The city's streams
//! and `XF_ROUTES` are kept on all three (`nats.replicas = 3`), and each district's leaf
//! remote lists the three leaf listeners. The test kills the server leading `XF_ROUTES` (not
//! the one the city's services use) and keeps it down: transfers between the districts,
//! escalations to the city and the city's own petitions go on, each once.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use xinfang_shared::ids::NodeCode;
use xinfang_shared::leaf_auth;
use xinfang_tests::topology::{
    district_file, escalation_id, events_of, hub_member_file, messages_with_id, parent_connected, start_node, submit,
    wait_until, DISTRICTS,
};
use xinfang_tests::up::UpNode;
use xinfang_tests::{free_port, petition_by};

const MEMBERS: [&str; 3] = ["a", "b", "c"];

/// Submits `petition` (with an idempotency key) to `node`, again while intake answers 503
/// (`unavailable`) or not within the client's timeout; the case id and how long it took.
async fn submit_retrying(http: &reqwest::Client, node: &UpNode, petition: &serde_json::Value) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let r = match http.post(format!("{}/v1/petitions", node.http())).json(petition).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() && started.elapsed() < Duration::from_secs(30) => continue,
            Err(e) => panic!("submit: {e}"),
        };
        match r.status().as_u16() {
            // 200: the receipt of an earlier attempt that the client gave up waiting for
            200 | 201 => {
                let receipt: serde_json::Value = r.json().await.unwrap();
                return (receipt["case_id"].as_str().unwrap().to_string(), started.elapsed());
            }
            503 if started.elapsed() < Duration::from_secs(30) => tokio::time::sleep(Duration::from_millis(500)).await,
            status => panic!("submit: {status} {}", r.text().await.unwrap_or_default()),
        }
    }
}

/// The server leading stream `name`.
async fn leader(js: &async_nats::jetstream::Context, name: &str) -> Option<String> {
    let mut stream = js.get_stream(name).await.ok()?;
    stream.info().await.ok()?.cluster.as_ref()?.leader.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_as_three_servers_goes_on_when_the_leader_of_its_routes_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (leaf, cluster): (Vec<u16>, Vec<u16>) = (0..3).map(|_| (free_port(), free_port())).unzip();
    let codes: Vec<NodeCode> = DISTRICTS.iter().map(|(c, _)| NodeCode::parse(c).unwrap()).collect();
    let issued = leaf_auth::issue(&dir.path().join("leaf"), &codes).expect("leaf credentials");

    // b and c first (server only), then a with the services: its streams need two servers
    let member = |i: usize| {
        let routes: Vec<u16> = (0..3).filter(|j| *j != i).map(|j| cluster[j]).collect();
        let text = hub_member_file(leaf[i], &issued.users, MEMBERS[i], cluster[i], &routes);
        let name = format!("320200-{}", MEMBERS[i]);
        let args: &[&str] = if i == 0 { &[] } else { &["--nats-only"] };
        start_node(dir.path(), &name, &text, args)
    };
    let mut servers_only: Vec<Option<UpNode>> = vec![None, Some(member(1)), Some(member(2))];
    let hub = member(0);
    let parents: Vec<String> = leaf.iter().map(|p| format!("\"nats-leaf://127.0.0.1:{p}\"")).collect();
    let mut districts = Vec::new();
    for (i, (code, name)) in DISTRICTS.iter().enumerate() {
        let text = district_file(code, name, DISTRICTS[1 - i], leaf[0], &issued.secrets[*code], "").replace(
            &format!("parent_urls = [\"nats-leaf://127.0.0.1:{}\"]", leaf[0]),
            &format!("parent_urls = [{}]", parents.join(", ")),
        );
        districts.push(start_node(dir.path(), code, &text, &[]));
    }
    let (binhu, liangxi) = (&districts[0], &districts[1]);
    let http = xinfang_tests::staff_http(Duration::from_secs(10));
    for d in [binhu, liangxi] {
        wait_until(Duration::from_secs(30), "leaf link up", || parent_connected(&http, d)).await;
    }
    let client = async_nats::connect(hub.nats_url()).await.unwrap();
    let hub_js = async_nats::jetstream::new(client.clone());
    let binhu_js = async_nats::jetstream::new(async_nats::connect(binhu.nats_url()).await.unwrap());
    let liangxi_js = async_nats::jetstream::new(async_nats::connect(liangxi.nats_url()).await.unwrap());
    for name in ["XF_ROUTES", "XF_CASES_320200", "XF_OUTBOX_320200", "XF_INBOX_320200", "KV_XF_SEQ_320200"] {
        let replicas = hub_js.get_stream(name).await.unwrap().info().await.unwrap().config.num_replicas;
        assert_eq!(replicas, 3, "{name} is kept on the three servers");
    }

    // whole: an escalation from 320211 reaches the city
    let mut group = petition_by(31);
    group["headcount"] = json!(6);
    let first = submit(&http, binhu, &group).await;
    let first_id = escalation_id(&binhu_js, "320211", &first).await;
    wait_until(Duration::from_secs(30), "escalation with the hub whole", || async {
        messages_with_id(&hub_js, "XF_INBOX_320200", &first_id).await == 1
    })
    .await;

    // the victim: the server leading XF_ROUTES, moved off `a` (where the services connect)
    let a = format!("xf_320200_{}", MEMBERS[0]);
    let mut led = leader(&hub_js, "XF_ROUTES").await.expect("XF_ROUTES has a leader");
    let moving = Instant::now();
    while led == a {
        assert!(moving.elapsed() < Duration::from_secs(30), "XF_ROUTES stays led by {a}");
        let _ = client.request("$JS.API.STREAM.LEADER.STEPDOWN.XF_ROUTES", "".into()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        led = leader(&hub_js, "XF_ROUTES").await.unwrap_or_else(|| a.clone());
    }
    let victim = MEMBERS.iter().position(|m| led == format!("xf_320200_{m}")).expect("a member leads");
    let mut gone = servers_only[victim].take().expect("b or c");
    let server = gone.pid_of("nats-server").expect("the member's nats-server");
    kill(Pid::from_raw(gone.child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = kill(Pid::from_raw(server), Signal::SIGKILL);
    let _ = gone.child.wait();
    std::mem::forget(gone); // already dead: no SIGTERM on drop
    let killed = Instant::now();
    println!("killed {led} (leading XF_ROUTES)");

    // with one server of three gone: a transfer, an escalation, a petition of the city's own
    let mut elsewhere = petition_by(32);
    elsewhere["location"] = json!({"division": "320213", "address": "梁溪区崇安寺"});
    let transfer = submit(&http, binhu, &elsewhere).await;
    let mut group = petition_by(33);
    group["headcount"] = json!(6);
    group["location"] = json!({"division": "320213", "address": "梁溪区"});
    let second = submit(&http, liangxi, &group).await;
    let second_id = escalation_id(&liangxi_js, "320213", &second).await;
    let mut own = petition_by(34);
    own["location"] = json!({"division": "320200", "address": "无锡市"});
    own["idempotency_key"] = json!("hub-cluster-34");
    // the city's ledger may have lost its leader with the server: intake answers 503 until a
    // new one is elected, and a client retries with its idempotency key
    let ((city_case, city_took), transfer_took, escalation_took) = tokio::join!(
        submit_retrying(&http, &hub, &own),
        wait_until(Duration::from_secs(60), "transfer with a hub server down", || async {
            events_of(&liangxi_js, "320213", &transfer, "transferred_in").await >= 1
        }),
        wait_until(Duration::from_secs(60), "escalation with a hub server down", || async {
            messages_with_id(&hub_js, "XF_INBOX_320200", &second_id).await >= 1
        })
    );
    wait_until(Duration::from_secs(30), "the city routes its own petition", || async {
        events_of(&hub_js, "320200", &city_case, "routed").await == 1
    })
    .await;
    println!(
        "one hub server of three killed: the city took a petition after {:.1} s, the transfer arrived in {:.1} s, the escalation in {:.1} s (from the kill: {:.1} s); XF_ROUTES now led by {:?}",
        city_took.as_secs_f64(),
        transfer_took.as_secs_f64(),
        escalation_took.as_secs_f64(),
        killed.elapsed().as_secs_f64(),
        leader(&hub_js, "XF_ROUTES").await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(events_of(&liangxi_js, "320213", &transfer, "transferred_in").await, 1, "the transfer once");
    assert_eq!(messages_with_id(&hub_js, "XF_INBOX_320200", &second_id).await, 1, "the escalation once");
    assert_eq!(messages_with_id(&hub_js, "XF_INBOX_320200", &first_id).await, 1, "the first escalation kept, once");
    // the inboxes' sources move to the new leader at once (Links::watch), not after the
    // server's retry timers (42 s seen without)
    assert!(transfer_took.max(escalation_took) < Duration::from_secs(30), "within 30 s of the kill");
    let ready = http.get(format!("{}/readyz", hub.http())).send().await.unwrap();
    assert!(ready.status().is_success(), "the city's intake is ready");
}
