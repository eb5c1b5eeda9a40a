//! The pages (services/web, issue 16) over real HTTP: sign-in and sessions kept in JetStream
//! KV, the session handed to intake's NATS API, each role's pages and refusals, cross-site
//! posts refused, sessions that end, the public's lookups rate limited.

use std::time::Duration;

use serde_json::{json, Value};
use xinfang_tests::browser::{sign_in, until_listed};
use xinfang_tests::{form_body, id_number, page_users as users, ServiceProcess, TestNode, PASSWORD};

/// A browser-like client: no redirects followed, the session cookie carried by hand.
struct Visitor {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    location: String,
    body: String,
    set_cookie: Option<String>,
}

impl Visitor {
    fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Self { base: base.to_string(), http, cookie: None }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let location = header("location").unwrap_or_default();
        let set_cookie = header("set-cookie");
        if let Some(c) = &set_cookie {
            let pair = c.split(';').next().unwrap_or_default().to_string();
            self.cookie = if pair.ends_with('=') { None } else { Some(pair) };
        }
        Page { status, location, body: r.text().await.unwrap_or_default(), set_cookie }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// A form post from one of our pages (`Sec-Fetch-Site: same-origin`, as a browser sends).
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = form_body(form);
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(body);
        self.send(req).await
    }

    async fn login(&mut self, login: &str) -> Page {
        self.post("/login", &[("login", login), ("password", PASSWORD), ("next", "/")]).await
    }

    fn session_id(&self) -> String {
        self.cookie.as_deref().and_then(|c| c.split_once('=')).map(|(_, v)| v.to_string()).expect("signed in")
    }
}

/// The text between `id="<id>">` and the next `<`.
fn text_of(body: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    body.split_once(&marker).map(|(_, rest)| rest.split('<').next().unwrap_or_default().to_string()).unwrap_or_default()
}

async fn api(node: &TestNode, endpoint: &str, session: &str, body: Value) -> Value {
    let nc = async_nats::connect(&node.nats.url).await.unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert("Authorization", format!("Session {session}").as_str());
    let subject = format!("xf.320211.api.{endpoint}");
    let reply = nc.request_with_headers(subject, h, serde_json::to_vec(&body).unwrap().into()).await.unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

fn visit_form(id_number: &str) -> Vec<(&'static str, String)> {
    vec![
        ("idempotency_key", ulid::Ulid::new().to_string()),
        ("channel", "visit".into()),
        ("headcount", "1".into()),
        ("petitioners[0].name", "张三".into()),
        ("petitioners[0].id_number", id_number.into()),
        ("petitioners[0].phone", "13812345678".into()),
        ("location.division", "320211".into()),
        ("location.address", "蠡湖街道某小区".into()),
        ("category", "urban_construction".into()),
        ("kind", "appeal_request".into()),
        ("title", "小区电梯长期故障".into()),
        ("content", "电梯停运三个月，请求督促物业维修。".into()),
    ]
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clerks_organs_auditors_and_the_office_each_see_their_pages() {
    let node = TestNode::start_services(&users("", ""), &["routing", "escalation"]);
    let web = ServiceProcess::start("web", &node.config, &node.nats.url, node.intake.dir.as_path());
    let mut nobody = Visitor::new(&web.http);

    // nobody signed in: every staff page sends to the sign-in page, coming back after
    for path in ["/inbox", "/register", "/overview", "/escalations", "/cases/320211-20261202-000001"] {
        let p = nobody.get(path).await;
        assert_eq!(p.status, 303, "{path}");
        assert!(p.location.starts_with("/login?next="), "{path}: {}", p.location);
    }
    let p = nobody.post("/login", &[("login", "clerk"), ("password", "wrong")]).await;
    assert_eq!(p.status, 401);
    assert!(p.body.contains("用户名或密码不正确"));
    assert!(nobody.cookie.is_none(), "no session for a wrong password");

    // the clerk signs in: a session cookie, HttpOnly, SameSite=Strict; a fresh id at sign-in
    let mut clerk = Visitor::new(&web.http);
    let p = clerk.login("clerk").await;
    assert_eq!(p.status, 303, "{}", p.body);
    let cookie = p.set_cookie.expect("a session cookie");
    assert!(cookie.starts_with("xf_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let first = clerk.session_id();
    clerk.login("clerk").await;
    assert_ne!(clerk.session_id(), first, "the session id is rotated at sign-in");
    assert_eq!(api(&node, "case.list", &first, json!({})).await["error"]["code"], "unauthorized", "the old id is dead");

    // registration: a bad ID number is shown beside its field; a good form registers
    let mut wrong_check = id_number(78);
    let last = if wrong_check.ends_with('1') { "2" } else { "1" };
    wrong_check.replace_range(17.., last);
    let bad = visit_form(&wrong_check);
    let p = clerk.post("/register", &pairs(&bad)).await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("data-field=\"petitioners[0].id_number\""), "{}", p.body);
    assert!(p.body.contains("小区电梯长期故障"), "the form keeps what was typed");
    let form = visit_form(&id_number(77));
    let p = clerk.post("/register", &pairs(&form)).await;
    assert_eq!(p.status, 201, "{}", p.body);
    let case = text_of(&p.body, "case_id");
    let code = text_of(&p.body, "query_code");
    assert!(case.starts_with("320211-") && code.len() == 6, "{case} {code}");
    let again = clerk.post("/register", &pairs(&form)).await;
    assert_eq!(text_of(&again.body, "case_id"), case, "the same form twice registers once");
    let registered = node.wait_for(&case, "registered", Duration::from_secs(5)).await.expect("in the ledger");
    assert_eq!(registered.recorded_by.map(|a| a.id).as_deref(), Some("clerk"), "the clerk is on record");
    node.wait_for(&case, "routed", Duration::from_secs(15)).await.expect("routed");

    // the session works on intake's NATS API as the clerk, and only while it lives
    let listed = api(&node, "case.list", &clerk.session_id(), json!({})).await;
    assert_eq!(listed["ok"], true, "{listed}");

    // the organ: its inbox has the case; another organ gets 404 for it; it accepts and replies
    let mut zjj = Visitor::new(&web.http);
    zjj.login("zjj").await;
    let mut inbox = zjj.get("/inbox").await;
    for _ in 0..50 {
        if inbox.body.contains(&case) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        inbox = zjj.get("/inbox").await;
    }
    assert!(inbox.body.contains(&case), "the organ's inbox lists the case: {}", inbox.body);
    assert!(inbox.body.contains("待受理"));
    let mut xfj = Visitor::new(&web.http);
    xfj.login("xfj").await;
    assert_eq!(xfj.get(&format!("/cases/{case}")).await.status, 404, "another organ's case is not found");
    assert!(!xfj.get("/inbox").await.body.contains(&case));
    let page = zjj.get(&format!("/cases/{case}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("13812345678"), "the handling organ sees the petitioner");
    assert!(page.body.contains("id=\"act-accept\""));
    let p = zjj.post(&format!("/cases/{case}/act"), &[("action", "accept")]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let accepted = node.wait_for(&case, "accepted", Duration::from_secs(5)).await.expect("accepted");
    assert_eq!(accepted.actor.id, "320211-zjj", "the organ is on record");
    let p = zjj
        .post(
            &format!("/cases/{case}/act"),
            &[("action", "reply"), ("outcome", "supported"), ("summary", "已责成物业十日内修复")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(zjj.get(&format!("/cases/{case}")).await.body.contains("已出具处理意见"));

    // a post made from another site is refused before anything happens
    let cross = zjj
        .http
        .post(format!("{}/cases/{case}/act", web.http))
        .header("cookie", zjj.cookie.clone().unwrap())
        .header("sec-fetch-site", "cross-site")
        .form(&[("action", "extend"), ("days", "10")]);
    assert_eq!(cross.send().await.unwrap().status().as_u16(), 403);
    let origin = zjj
        .http
        .post(format!("{}/logout", web.http))
        .header("cookie", zjj.cookie.clone().unwrap())
        .header("origin", "http://evil.example");
    assert_eq!(origin.send().await.unwrap().status().as_u16(), 403);

    // the auditor reads, masked, and cannot act; the office has the escalation pages only
    let mut audit = Visitor::new(&web.http);
    audit.login("audit").await;
    let page = audit.get(&format!("/cases/{case}")).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("13812345678") && page.body.contains("138****5678"), "masked for the auditor");
    assert!(!page.body.contains("id=\"act-"), "no action forms for an auditor");
    let p = audit.post(&format!("/cases/{case}/act"), &[("action", "accept")]).await;
    assert_eq!(p.status, 403);
    let mut office = Visitor::new(&web.http);
    office.login("office").await;
    assert_eq!(office.get("/escalations").await.status, 200);
    assert_eq!(office.get("/overview").await.status, 403);
    assert_eq!(zjj.get("/escalations").await.status, 403, "an organ has no escalation inbox");
    let overview = clerk.get("/overview").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("测试区住房和城乡建设局"), "{}", overview.body);

    // the public: the status by case id and query code, no personal data; then the evaluation
    let mut petitioner = Visitor::new(&web.http);
    let p = petitioner.post("/query", &[("case_id", &case), ("query_code", "AAAAAA")]).await;
    assert_eq!(p.status, 404);
    let p = petitioner.post("/query", &[("case_id", &case), ("query_code", &code)]).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(!p.body.contains("张三") && !p.body.contains("13812345678"), "no personal data in public");
    assert!(p.body.contains("id=\"act-evaluate\""));
    let p = petitioner
        .post(
            "/query/act",
            &[("case_id", &case), ("query_code", &code), ("action", "evaluate"), ("satisfaction", "satisfied")],
        )
        .await;
    assert!(p.body.contains("已提交：评价"), "{}", p.body);
    node.wait_for(&case, "evaluated", Duration::from_secs(5)).await.expect("evaluated");

    // signing out ends the session for the pages and the API at once
    let sid = zjj.session_id();
    let p = zjj.post("/logout", &[]).await;
    assert_eq!(p.status, 303);
    assert_eq!(api(&node, "case.list", &sid, json!({})).await["error"]["code"], "unauthorized");
    zjj.cookie = Some(format!("xf_session={sid}"));
    assert_eq!(zjj.get("/inbox").await.status, 303, "the old cookie signs in no one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_end_and_lookups_from_one_address_are_rate_limited() {
    let node = TestNode::start_with(&users(
        "[auth]\npublic_burst = 10\npublic_per_minute = 10\n",
        "session_idle_secs = 3\ntls = true",
    ));
    let web = ServiceProcess::start("web", &node.config, &node.nats.url, node.intake.dir.as_path());

    // a session left idle longer than web.session_idle_secs (3 s here) has ended, for the
    // pages and for the API
    let mut clerk = Visitor::new(&web.http);
    let p = clerk.login("clerk").await;
    assert_eq!(p.status, 303);
    // behind TLS (web.tls) the cookie is __Host- and Secure
    let cookie = p.set_cookie.expect("a session cookie");
    assert!(
        cookie.starts_with("__Host-xf_session=") && cookie.contains("Secure") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert_eq!(clerk.get("/inbox").await.status, 200);
    let sid = clerk.session_id();
    assert_eq!(api(&node, "case.list", &sid, json!({})).await["ok"], true);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(api(&node, "case.list", &sid, json!({})).await["error"]["code"], "unauthorized");
    let p = clerk.get("/inbox").await;
    assert_eq!(p.status, 303, "idle too long: sign in again");
    assert!(p.location.starts_with("/login"));

    let mut walker = Visitor::new(&web.http);
    let mut limited_at = None;
    for i in 0..50 {
        let p =
            walker.post("/query", &[("case_id", "320211-20261202-000001"), ("query_code", &format!("A{i:05}"))]).await;
        if p.status == 429 {
            assert!(p.body.contains("rate_limited"), "{}", p.body);
            limited_at = Some(i);
            break;
        }
        assert_eq!(p.status, 404);
    }
    assert!(limited_at.is_some_and(|i| i < 49), "429 before the 50th: {limited_at:?}");
    let p = walker.post("/login", &[("login", "clerk"), ("password", "guess")]).await;
    assert_eq!(p.status, 429, "sign-in attempts count against the same limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_goes_from_the_clerks_form_to_the_organ_and_back_to_the_petitioner_in_chromium() {
    let node = TestNode::start_services(&users("", ""), &["routing"]);
    let web = ServiceProcess::start("web", &node.config, &node.nats.url, node.intake.dir.as_path());
    let base = web.http.clone();
    let browser = xinfang_tests::browser::Browser::start().await;

    // the clerk registers a visit (来访) through the form
    browser.goto(&format!("{base}/login")).await;
    browser.screenshot("login").await;
    sign_in(&browser, &base, "clerk").await;
    browser.goto(&format!("{base}/register")).await;
    browser.type_into("input[name=\"petitioners[0].name\"]", "张三").await;
    browser.type_into("input[name=\"petitioners[0].id_number\"]", &id_number(91)).await;
    browser.type_into("input[name=\"petitioners[0].phone\"]", "13812345678").await;
    browser.type_into("input[name=\"location.address\"]", "蠡湖街道某小区").await;
    browser.type_into("input[name=\"title\"]", "小区电梯长期故障").await;
    browser.type_into("textarea[name=\"content\"]", "电梯停运三个月，请求督促物业维修。").await;
    browser.screenshot("register").await;
    browser.click("button[name=\"register\"]").await;
    let case = browser.text("#case_id").await;
    let code = browser.text("#query_code").await;
    assert!(case.starts_with("320211-") && code.len() == 6, "{case} {code}");
    browser.screenshot("receipt").await;
    let registered = node.wait_for(&case, "registered", Duration::from_secs(5)).await.expect("registered");
    assert_eq!(registered.data["channel"], "visit");
    browser.click("button[name=\"logout\"]").await;
    browser.await_text("h1", "工作人员登录").await;

    // the organ finds it in its inbox, accepts and replies
    sign_in(&browser, &base, "zjj").await;
    until_listed(&browser, &format!("{base}/inbox"), "#cases", &case).await;
    browser.screenshot("inbox").await;
    browser.click(&format!("tr[data-case=\"{case}\"] a")).await;
    browser.await_text("#case_id", &case).await;
    browser.screenshot("case").await;
    browser.click("button[name=\"accept\"]").await;
    browser.await_text("#state", "办理中").await;
    browser.type_into("textarea[name=\"summary\"]", "已责成物业十日内修复电梯，并由街道跟踪。").await;
    browser.click("button[name=\"reply\"]").await;
    browser.await_text("#state", "已出具处理意见").await;
    browser.click("button[name=\"logout\"]").await;
    browser.await_text("h1", "工作人员登录").await;

    // the bureau's overview counts it
    sign_in(&browser, &base, "clerk").await;
    browser.goto(&format!("{base}/overview")).await;
    assert_eq!(browser.text("#total").await, "1");
    browser.screenshot("overview").await;
    browser.click("button[name=\"logout\"]").await;
    browser.await_text("h1", "工作人员登录").await;

    // the petitioner looks it up with the query code and rates the reply
    browser.goto(&format!("{base}/query")).await;
    browser.type_into("input[name=\"case_id\"]", &case).await;
    browser.type_into("input[name=\"query_code\"]", &code).await;
    browser.click("button[name=\"lookup\"]").await;
    browser.await_text("#state", "已出具处理意见").await;
    browser.screenshot("status").await;
    browser.click("button[name=\"evaluate\"]").await;
    assert!(browser.text("#notice").await.contains("已提交：评价"));
    browser.quit().await;
    let evaluated = node.wait_for(&case, "evaluated", Duration::from_secs(5)).await.expect("evaluated");
    assert_eq!(evaluated.data["satisfaction"], "satisfied");
}
