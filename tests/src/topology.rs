//! A small city for tests and the fault campaign (DESIGN.md §10): the hub 320200 and the
//! districts 320211 (滨湖区) and 320213 (梁溪区), each run by `xinfang up` with its own
//! nats-server and JetStream domain, each district's leaf link to the hub through a
//! [`Proxy`] that can be cut.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use xinfang_shared::ledger::read_stream;
use xinfang_shared::subjects;

use xinfang_shared::ids::NodeCode;
use xinfang_shared::leaf_auth;

use crate::proxy::Proxy;
use crate::up::UpNode;

const CATEGORIES: &str = r#"
[[categories]]
code = "urban_construction"
name = "城乡建设"
"#;

/// A district's node file: linked to the hub through `proxy` with the leaf secret in `secret`,
/// `other` its sibling (属地 forwarding), `extra` appended (e.g. `[deadlines.periods]`).
pub fn district_file(code: &str, name: &str, other: (&str, &str), proxy: u16, secret: &Path, extra: &str) -> String {
    let (other, other_name) = other;
    format!(
        r#"
[node]
code = "{code}"
name = "{name}"
parent = "320200"

[nats]
url = ""
parent_urls = ["nats-leaf://127.0.0.1:{proxy}"]
leaf_credentials = {secret:?}

[http]
listen = "127.0.0.1:0"

[[divisions]]
code = "{code}"
name = "{name}"

[[peers]]
code = "{other}"
name = "{other_name}"
divisions = ["{other}"]

[[peers]]
code = "320200"
name = "无锡市"
divisions = []
{CATEGORIES}
[[organs]]
id = "{code}-xfj"
name = "{name}信访局"
role = "petition_bureau"
node = "{code}"

[[organs]]
id = "{code}-zjj"
name = "{name}住房和城乡建设局"
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
        auth = crate::staff_auth_toml()
    )
}

/// The hub's node file: the city, with its leaf listener on `leaf` admitting the districts
/// of the `users` file.
pub fn hub_file(leaf: u16, users: &Path) -> String {
    format!(
        r#"
[node]
code = "320200"
name = "无锡市"

[nats]
url = ""
leaf_listen = "127.0.0.1:{leaf}"
leaf_users = {users:?}

[http]
listen = "127.0.0.1:0"

[[divisions]]
code = "320200"
name = "无锡市"

[[peers]]
code = "320211"
name = "滨湖区"
divisions = ["320211"]

[[peers]]
code = "320213"
name = "梁溪区"
divisions = ["320213"]
{CATEGORIES}
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
        auth = crate::staff_auth_toml()
    )
}

/// One server of the hub as a 3-server cluster: the hub's node file with its leaf listener on
/// `leaf`, its streams kept on three servers, and `[nats.cluster]` for `member` listening for
/// routes on `cluster` and routing to `routes` (the other members' route ports).
pub fn hub_member_file(leaf: u16, users: &Path, member: &str, cluster: u16, routes: &[u16]) -> String {
    let routes: Vec<String> = routes.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
    let cluster = format!(
        "replicas = 3\n\n[nats.cluster]\nmember = \"{member}\"\nlisten = \"127.0.0.1:{cluster}\"\nroutes = [{}]\n",
        routes.join(", ")
    );
    hub_file(leaf, users).replacen("\n[http]", &format!("{cluster}\n[http]"), 1)
}

/// The districts of the small city: code, name.
pub const DISTRICTS: [(&str, &str); 2] = [("320211", "滨湖区"), ("320213", "梁溪区")];

/// The running city: the hub, the districts in [`DISTRICTS`] order, and their links.
pub struct City {
    pub hub: UpNode,
    pub districts: Vec<UpNode>,
    pub links: Vec<Proxy>,
    /// The node files as written, by code.
    pub files: Vec<(String, String)>,
}

impl City {
    /// Starts the hub, then the districts (with `extra` in their node files) under `dir`.
    pub async fn start(dir: &Path, extra: &str) -> Self {
        let leaf = crate::free_port();
        let codes: Vec<NodeCode> = DISTRICTS.iter().map(|(c, _)| NodeCode::parse(c).unwrap()).collect();
        let issued = leaf_auth::issue(&dir.join("leaf"), &codes).expect("leaf credentials");
        let mut files = vec![("320200".to_string(), hub_file(leaf, &issued.users))];
        let hub = start_node(dir, &files[0].0, &files[0].1, &[]);
        let target: SocketAddr = format!("127.0.0.1:{leaf}").parse().unwrap();
        let mut links = Vec::new();
        let mut districts = Vec::new();
        for (i, (code, name)) in DISTRICTS.iter().enumerate() {
            let link = Proxy::start(target).await;
            let text = district_file(code, name, DISTRICTS[1 - i], link.port, &issued.secrets[*code], extra);
            districts.push(start_node(dir, code, &text, &[]));
            files.push((code.to_string(), text));
            links.push(link);
        }
        Self { hub, districts, links, files }
    }

    /// A JetStream context on node `code`'s own server.
    pub async fn jetstream(&self, code: &str) -> async_nats::jetstream::Context {
        let node = if code == "320200" { &self.hub } else { &self.districts[district_index(code)] };
        async_nats::jetstream::new(async_nats::connect(node.nats_url()).await.expect("connect"))
    }

    /// The node file of `code`.
    pub fn file(&self, code: &str) -> &str {
        &self.files.iter().find(|(c, _)| c == code).expect("a node of the city").1
    }
}

/// The index of a district in [`DISTRICTS`].
pub fn district_index(code: &str) -> usize {
    DISTRICTS.iter().position(|(c, _)| *c == code).expect("a district of the test city")
}

/// Writes node file `text` as `DIR/<name>.toml` and runs `xinfang up` on it (with `args`),
/// its data under `DIR/<name>`.
pub fn start_node(dir: &Path, name: &str, text: &str, args: &[&str]) -> UpNode {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    UpNode::start_with(&file, &dir.join(name), args)
}

/// The id district `node` gives the escalation of `case` to the city: its `registered`
/// event's id and `:parent` (a group petition is reported at once).
pub async fn escalation_id(js: &async_nats::jetstream::Context, node: &str, case: &str) -> String {
    let subject = format!("xf.{node}.case.{case}.registered");
    let registered = read_stream(js, &format!("XF_CASES_{node}"), subject).await.expect("read the ledger");
    format!("{}:parent", registered[0].event.event_id)
}

/// Submits a petition over HTTP; its case id.
pub async fn submit(http: &reqwest::Client, node: &UpNode, petition: &Value) -> String {
    let r = http.post(format!("{}/v1/petitions", node.http())).json(petition).send().await.expect("submit");
    assert_eq!(r.status().as_u16(), 201);
    let receipt: Value = r.json().await.unwrap();
    receipt["case_id"].as_str().unwrap().to_string()
}

/// The events of type `kind` of `case` in `node`'s ledger.
pub async fn events_of(js: &async_nats::jetstream::Context, node: &str, case: &str, kind: &str) -> usize {
    let node = NodeCode::parse(node).unwrap();
    let case = xinfang_shared::ids::CaseId::parse(case).unwrap();
    let stored = read_stream(js, &subjects::case_stream(&node), subjects::case_filter(&node, &case)).await;
    stored.map(|s| s.iter().filter(|x| x.event.kind == kind).count()).unwrap_or(0)
}

/// How many messages with id `id` the stream `name` holds.
pub async fn messages_with_id(js: &async_nats::jetstream::Context, name: &str, id: &str) -> usize {
    read_stream(js, name, String::new()).await.map(|s| s.iter().filter(|x| x.event.event_id == id).count()).unwrap_or(0)
}

/// Whether `node` reports its parent link up (`GET /v1/node/links`).
pub async fn parent_connected(http: &reqwest::Client, node: &UpNode) -> bool {
    let Ok(r) = http.get(format!("{}/v1/node/links", node.http())).send().await else { return false };
    let v: Value = r.json().await.unwrap_or_default();
    v["parent"]["connected"] == true
}

/// Polls `f` every 100 ms until it holds (panics after `limit`); how long it took.
pub async fn wait_until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}
