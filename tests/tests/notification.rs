//! Notices over real channels: e-mail to a real SMTP server (Debian's python3-aiosmtpd), and
//! an SMS gateway (a local HTTP server) that fails, while the notification service is
//! SIGKILLed mid-retry, then recovers: every notice is delivered, recorded once, and every
//! attempt of a notice carries the same idempotency key.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use xinfang_shared::ids::CaseId;
use xinfang_tests::{free_port, node_toml, petition_by, NatsServer, ServiceProcess, TestNode};

/// Debian's aiosmtpd writing every message into a maildir.
struct Smtp {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Smtp {
    // the child is kept in `Smtp`, which kills and waits for it on drop
    #[allow(clippy::zombie_processes)]
    fn start() -> Self {
        let maildir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail")) // created by the handler, with its tmp/new/cur
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3-aiosmtpd (scripts/setup.sh --test-tools)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { child, port, maildir };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("aiosmtpd did not listen on {port}");
    }

    fn messages(&self) -> Vec<String> {
        let new = self.maildir.path().join("mail").join("new");
        std::fs::read_dir(new)
            .map(|d| d.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_assignment_reaches_the_organ_by_email_over_real_smtp() {
    let smtp = Smtp::start();
    let extra = format!(
        r#"
[notification]
smtp_host = "127.0.0.1"
smtp_port = {}
smtp_from = "xinfang@binhu.gov.cn"
retry_initial = "1s"

[notification.channels]
petitioner = "file"
organ = "email"

[notification.contacts]
"320211-zjj" = "zjj@binhu.gov.cn"
"#,
        smtp.port
    );
    let nats = Arc::new(NatsServer::start(false));
    let node =
        TestNode::start_node(nats.clone(), &node_toml("320211", &nats.url, &extra), &["routing", "notification"]);
    let (_, r) = node.submit(&petition_by(31)).await;
    let case = r["case_id"].as_str().unwrap().to_string();
    let sent = node
        .wait_for_where(&case, "notified", Duration::from_secs(30), |e| e.data["template"] == "assignment")
        .await
        .expect("assignment notified");
    assert_eq!(sent.data["channel"], "email");
    assert_eq!(sent.data["recipient"], "z***@binhu.gov.cn", "masked in the ledger");
    let notice_id = sent.data["notice_id"].as_str().unwrap().replace([':', ' '], ".");
    let mail = smtp.messages().into_iter().find(|m| m.contains(&notice_id)).expect("the e-mail is in the mailbox");
    assert!(mail.contains("zjj@binhu.gov.cn") && mail.contains("xinfang@binhu.gov.cn"), "{mail}");
    // the petitioner's receipt went to the file sink, with the query code
    let receipt = node
        .wait_for_where(&case, "notified", Duration::from_secs(30), |e| e.data["template"] == "receipt")
        .await
        .expect("receipt notified");
    assert_eq!(receipt.data["channel"], "file");
    assert_eq!(receipt.data["recipient"], "138****5678");
}

/// What the gateway saw of one notice.
#[derive(Debug, Clone, Default)]
struct Seen {
    attempts: usize,
    delivered: usize,
    texts: Vec<String>,
}

#[derive(Default)]
struct Gateway {
    failing: AtomicBool,
    /// By notice id.
    seen: Mutex<HashMap<String, Seen>>,
}

async fn sms(State(g): State<Arc<Gateway>>, headers: HeaderMap, Json(body): Json<Value>) -> StatusCode {
    let key = headers.get("Idempotency-Key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(body["notice_id"].as_str(), Some(key.as_str()), "the key is the notice id");
    let failing = g.failing.load(Ordering::SeqCst);
    let mut seen = g.seen.lock().unwrap();
    let entry = seen.entry(key).or_default();
    entry.attempts += 1;
    if failing {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    entry.delivered += 1;
    entry.texts.push(body["text"].as_str().unwrap_or_default().to_string());
    StatusCode::OK
}

/// Serves `gateway` on a local port; the node file's `[notification]` sending petitioners' notices
/// to it by SMS (retried after a second, `more` added), organs' to the file sink.
async fn sms_node(gateway: &Arc<Gateway>, more: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route("/sms", post(sms)).with_state(gateway.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!(
        r#"
[notification]
sms_url = "http://127.0.0.1:{port}/sms"
retry_initial = "1s"
{more}

[notification.channels]
petitioner = "sms"
organ = "file"
"#
    )
}

/// The ids of the notice outcomes (`notified`, `notification_failed`) in a case's ledger.
async fn outcomes(node: &TestNode, case: &str) -> Vec<String> {
    node.events(case)
        .await
        .into_iter()
        .filter(|e| e.kind == "notified" || e.kind == "notification_failed")
        .map(|e| e.event_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_sms_gateway_that_fails_and_a_kill_mid_retry_lose_no_notice() {
    let gateway = Arc::new(Gateway { failing: AtomicBool::new(true), ..Default::default() });
    let extra = sms_node(&gateway, "retry_max = \"2s\"").await;
    let nats = Arc::new(NatsServer::start(false));
    let mut node = TestNode::start_node(nats.clone(), &node_toml("320211", &nats.url, &extra), &["notification"]);
    let mut cases = Vec::new();
    for i in 0..5 {
        let (_, r) = node.submit(&petition_by(40 + i)).await;
        cases.push((r["case_id"].as_str().unwrap().to_string(), r["query_code"].as_str().unwrap().to_string()));
    }
    // the gateway refuses for a while; the service dies in the middle of its retries
    for _ in 0..100 {
        if gateway.seen.lock().unwrap().values().filter(|s| s.attempts >= 2).count() >= cases.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.service("notification").restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    gateway.failing.store(false, Ordering::SeqCst);

    for (case, code) in &cases {
        let ok = node
            .wait_for_where(case, "notified", Duration::from_secs(30), |e| e.data["template"] == "receipt")
            .await
            .unwrap_or_else(|| panic!("{case}: no receipt notified"));
        assert_eq!(ok.data["channel"], "sms");
        assert_eq!(ok.data["recipient"], "138****5678");
        assert!(ok.data["attempts"].as_u64().unwrap() >= 1);
        let id = ok.data["notice_id"].as_str().unwrap().to_string();
        let seen = gateway.seen.lock().unwrap().get(&id).cloned().expect("the gateway saw the notice");
        assert!(seen.attempts >= 3, "{case}: retried under its one key ({} attempts)", seen.attempts);
        assert!(seen.delivered >= 1, "{case}: delivered");
        assert!(seen.texts.iter().all(|t| t.contains(case.as_str()) && t.contains(code.as_str())), "{seen:?}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (case, _) in &cases {
        let notified = outcomes(&node, case).await;
        let mut unique = notified.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), notified.len(), "{case}: a notice recorded twice: {notified:?}");
        assert_eq!(notified.len(), 1, "{case}: one receipt (no routing here): {notified:?}");
    }
    let url = format!("{}/metrics", node.service("notification").http);
    let metrics = node.http.get(url).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains("xf_notification_outbox_depth 0"), "{text}");
    assert!(!text.contains("13812345678"), "no phone number in metrics");
}

/// Two notification processes split the cases (`notification.processes = 2`, issue 18:
/// replicas): each notice is sent by one of them, once; the second is SIGKILLed during a burst
/// and started again, and still no notice is lost or recorded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_split_the_notices_and_each_is_sent_once() {
    let gateway = Arc::new(Gateway::default());
    let extra = sms_node(&gateway, "processes = 2").await;
    let nats = Arc::new(NatsServer::start(false));
    let mut node = TestNode::start_node(nats.clone(), &node_toml("320211", &nats.url, &extra), &["notification"]);
    let first_http = node.service("notification").http.clone();
    let second_dir = tempfile::tempdir().unwrap();
    let mut second =
        ServiceProcess::start_replica("notification", &node.config, &node.nats.url, second_dir.path(), "2");
    let mut cases = Vec::new();
    for i in 0..20 {
        let (_, r) = node.submit(&petition_by(i)).await;
        cases.push(CaseId::parse(r["case_id"].as_str().unwrap()).unwrap());
    }
    let receipts = |cases: &[CaseId]| {
        let cases = cases.to_vec();
        let node = &node;
        async move {
            let mut ids = Vec::new();
            for case in &cases {
                let ok = node
                    .wait_for_where(case.as_str(), "notified", Duration::from_secs(30), |e| {
                        e.data["template"] == "receipt"
                    })
                    .await
                    .unwrap_or_else(|| panic!("{case}: no receipt notified"));
                ids.push(ok.data["notice_id"].as_str().unwrap().to_string());
            }
            ids
        }
    };
    // no process died: each notice reached the gateway exactly once
    for id in receipts(&cases).await {
        let seen = gateway.seen.lock().unwrap().get(&id).cloned().expect("the gateway saw the notice");
        assert_eq!((seen.attempts, seen.delivered), (1, 1), "{id}: sent by one process, once");
    }
    let shares: Vec<u32> = cases.iter().map(|c| c.share(2)).collect();
    assert!(shares.contains(&1) && shares.contains(&2), "both processes had cases: {shares:?}");
    for (http, share) in [(first_http, 1), (second.http.clone(), 2)] {
        let text = node.http.get(format!("{http}/metrics")).send().await.unwrap().text().await.unwrap();
        let sent: f64 = text
            .lines()
            .filter(|l| l.starts_with("xf_notification_notices_total{") && l.contains("sms"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let owned = shares.iter().filter(|s| **s == share).count();
        assert_eq!(sent as usize, owned, "process {share} sent its share:\n{text}");
    }

    // the second dies during a burst and comes back: still every notice, each recorded once
    let mut burst = Vec::new();
    for i in 20..40 {
        let (_, r) = node.submit(&petition_by(i)).await;
        burst.push(CaseId::parse(r["case_id"].as_str().unwrap()).unwrap());
        if i == 25 {
            second.restart();
        }
    }
    receipts(&burst).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for case in cases.iter().chain(&burst) {
        let recorded = outcomes(&node, case.as_str()).await;
        assert_eq!(recorded.len(), 1, "{case}: one receipt recorded once: {recorded:?}");
    }
}

/// The notification service recorded a notice and died before sled's removal of it was
/// flushed; it comes back after the ledger's duplicate window (shrunk here to a second): the
/// notice is neither sent nor recorded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notice_recorded_before_a_crash_is_not_sent_again_after_the_duplicate_window() {
    use xinfang_notification::channels::Notice;
    use xinfang_notification::outbox::Pending;
    let gateway = Arc::new(Gateway::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route("/sms", post(sms)).with_state(gateway.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let extra = format!(
        "\n[notification]\nsms_url = \"http://127.0.0.1:{port}/sms\"\n\n[notification.channels]\npetitioner = \"sms\"\norgan = \"file\"\n"
    );
    let nats = Arc::new(NatsServer::start(false));
    let mut node = TestNode::start_node(nats.clone(), &node_toml("320211", &nats.url, &extra), &["notification"]);
    let (_, r) = node.submit(&petition_by(61)).await;
    let case = r["case_id"].as_str().unwrap().to_string();
    let sent = node
        .wait_for_where(&case, "notified", Duration::from_secs(30), |e| e.data["template"] == "receipt")
        .await
        .expect("receipt notified");
    let id = sent.data["notice_id"].as_str().unwrap().to_string();
    let text = gateway.seen.lock().unwrap().get(&id).expect("sent").texts[0].clone();

    // the crash: the notice is still in the outbox, as if its removal had not been flushed
    let service = node.service("notification");
    service.sigkill();
    let store = xinfang_shared::projection::Projection::open(&service.dir.join("notification"), "outbox").unwrap();
    let an_hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let pending = Pending {
        notice: Notice {
            notice_id: id.clone(),
            case_id: case.clone(),
            cause_event_id: sent.causation_id.clone().expect("caused by the registration"),
            template: "receipt".into(),
            recipient: "13812345678".into(),
            text,
        },
        channel: "sms".into(),
        attempts: 0,
        first_at: an_hour_ago,
        next_at: an_hour_ago,
        undeliverable: None,
    };
    store.tree().insert(format!("o/{id}"), serde_json::to_vec(&pending).unwrap()).unwrap();
    store.flush().await.unwrap();
    drop(store);

    // the ledger forgets the message ids it has seen (an hour passes)
    xinfang_tests::forget_message_ids(&nats.jetstream().await, "XF_CASES_320211").await;

    node.service("notification").restart(); // provisions the ledger's one-hour window again
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(gateway.seen.lock().unwrap().get(&id).unwrap().delivered, 1, "sent once");
    let recorded = node.events(&case).await.iter().filter(|e| e.kind == "notified").count();
    assert_eq!(recorded, 1, "recorded once");
    let url = format!("{}/metrics", node.service("notification").http);
    let text = node.http.get(url).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("xf_notification_outbox_depth 0"), "{text}");
}
