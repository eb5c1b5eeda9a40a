//! A small city for tests and the fault campaign (DESIGN.md §10): the hub 320200 and the
//! districts 320211 (滨湖区) and 320213 (梁溪区), each run by `xinfang up` with its own
//! nats-server and JetStream domain, each district's leaf link to the hub through a
//! [`Proxy`] that can be cut.

use std::net::SocketAddr;
use std::path::Path;

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
"#
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
"#
    )
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
        let leaf = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let codes: Vec<NodeCode> = DISTRICTS.iter().map(|(c, _)| NodeCode::parse(c).unwrap()).collect();
        let issued = leaf_auth::issue(&dir.join("leaf"), &codes).expect("leaf credentials");
        let mut files = vec![("320200".to_string(), hub_file(leaf, &issued.users))];
        let hub = start(dir, &files[0].0, &files[0].1);
        let target: SocketAddr = format!("127.0.0.1:{leaf}").parse().unwrap();
        let mut links = Vec::new();
        let mut districts = Vec::new();
        for (i, (code, name)) in DISTRICTS.iter().enumerate() {
            let link = Proxy::start(target).await;
            let text = district_file(code, name, DISTRICTS[1 - i], link.port, &issued.secrets[*code], extra);
            districts.push(start(dir, code, &text));
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

fn start(dir: &Path, code: &str, text: &str) -> UpNode {
    let file = dir.join(format!("{code}.toml"));
    std::fs::write(&file, text).unwrap();
    UpNode::start(&file, &dir.join(code))
}
