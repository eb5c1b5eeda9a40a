//! `xinfang up --city DIR [--data DIR]`: every node file in a directory as its own node with
//! its own nats-server and JetStream domain (DESIGN.md §10), the node without a parent as the
//! hub: a leaf listener is opened on it and every other node links to it. Each node is an
//! `xinfang up` child (tethered: it stops if this process dies). Each district gets its own
//! leaf secret under `DATA/leaf/` and the hub admits only them (xinfang_shared::leaf_auth).
//! The hub starts first, then every district at once. One JSON line
//! `{"ready":true,"city":…,"nodes":{"<code>":{<its ready line>},…}}` when all are ready.
//! `xinfang up --demo` is this on the Wuxi example's files (crate::demo), with petitions.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use xinfang_shared::ids::NodeCode;
use xinfang_shared::leaf_auth::{self, Issued};
use xinfang_shared::runtime;

/// How long the whole city may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(120);

struct Node {
    code: String,
    file: PathBuf,
    parent: Option<String>,
}

/// Reads the node files of `dir` (each `*.toml` with a `[node]` table), hub first.
fn nodes(dir: &Path) -> Result<Vec<Node>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("--city {}: {e}", dir.display()))?;
    let mut nodes = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: toml::Table = text.parse().map_err(|e| format!("{}: {e}", path.display()))?;
        let Some(node) = value.get("node") else { continue };
        let code = node.get("code").and_then(|c| c.as_str()).ok_or(format!("{}: node.code missing", path.display()))?;
        let parent = node.get("parent").and_then(|p| p.as_str()).map(str::to_string);
        nodes.push(Node { code: code.to_string(), file: path, parent });
    }
    nodes.sort_by_key(|n| (n.parent.is_some(), n.code.clone()));
    match nodes.iter().filter(|n| n.parent.is_none()).count() {
        1 => Ok(nodes),
        n => Err(format!(
            "--city {}: expected exactly one node file without node.parent (the hub), found {n}",
            dir.display()
        )),
    }
}

/// The node file with its `[nats]` links set: the hub listens on `leaf` and admits the users
/// of `issued`, the others link to it with their own secrets.
fn linked_file(node: &Node, leaf: &str, issued: &Issued, out: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(&node.file).map_err(|e| format!("{}: {e}", node.file.display()))?;
    let mut value: toml::Table = text.parse().map_err(|e| format!("{}: {e}", node.file.display()))?;
    let nats = value.entry("nats").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let nats = nats.as_table_mut().ok_or(format!("{}: [nats] is not a table", node.file.display()))?;
    nats.insert("url".into(), "".into());
    let path_value = |p: &Path| toml::Value::String(p.display().to_string());
    if node.parent.is_none() {
        nats.insert("leaf_listen".into(), leaf.into());
        nats.insert("leaf_users".into(), path_value(&issued.users));
    } else {
        nats.insert("parent_urls".into(), toml::Value::Array(vec![format!("nats-leaf://{leaf}").into()]));
        if let Some(secret) = issued.secrets.get(&node.code) {
            nats.insert("leaf_credentials".into(), path_value(secret));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let path = out.join("node.toml");
    let text = format!("# written by `xinfang up --city` from {}\n{value}", node.file.display());
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// A free port on 127.0.0.1 (the hub's leaf listener, the demo's Prometheus).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn start(file: &Path, data: &Path, targets: &Path, secret: &Path) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    Command::new(exe)
        .arg("up")
        .arg("--config")
        .arg(file)
        .arg("--data")
        .arg(data)
        .env("XF__METRICS__TARGETS_FILE", targets)
        // one secret for the city's nodes, so a forwarded case's query code verifies there
        .env("XF__AUTH__SECRET_FILE", secret)
        .env(runtime::TETHER_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the node of {}: {e}", file.display()))
}

/// Reads a child `up`'s stdout until its ready line, then keeps draining it.
async fn ready_line(stdout: ChildStdout) -> Result<Value, String> {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["ready"] == true {
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return Ok(v);
            }
        }
    }
    Err("exited before its ready line".into())
}

/// `xinfang up --city DIR`, or with `demo` the Wuxi example city with demo petitions.
pub async fn main(dir: Option<PathBuf>, data: Option<PathBuf>, demo: bool) -> ExitCode {
    let shutdown = runtime::shutdown_on_signals();
    let data = data.unwrap_or_else(|| PathBuf::from("data").join(if demo { "demo" } else { "city" }));
    let (dir, token) = match dir {
        Some(d) => (d, None),
        None => match crate::demo::write_city(&data) {
            Ok((d, token)) => (d, Some(token)),
            Err(e) => return fail(&e),
        },
    };
    let nodes = match nodes(&dir) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("xinfang up: {e}");
            return ExitCode::from(2);
        }
    };
    let leaf = match free_port() {
        Ok(p) => format!("127.0.0.1:{p}"),
        Err(e) => return fail(&e),
    };
    let hub = nodes[0].code.clone();
    // each district's own leaf secret, and the hub's hashes of them (kept across runs)
    let districts: Vec<NodeCode> = nodes.iter().skip(1).filter_map(|n| NodeCode::parse(&n.code).ok()).collect();
    let issued = match leaf_auth::issue(&data.join("leaf"), &districts) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut lines = Map::new();
    let started = tokio::time::Instant::now();
    // the hub first, so that the districts' leaf links find its listener; then every district
    // at once
    let (hub_node, district_nodes) = nodes.split_first().expect("a hub");
    for wave in [std::slice::from_ref(hub_node), district_nodes] {
        let mut waiting = tokio::task::JoinSet::new();
        for node in wave {
            let out = data.join(&node.code);
            let file = match linked_file(node, &leaf, &issued, &out) {
                Ok(f) => f,
                Err(e) => return fail(&e),
            };
            // every node's target list in one directory, for one Prometheus over the city
            let targets = crate::prometheus::targets_dir(&data).join(format!("{}.json", node.code));
            let mut child = match start(&file, &out, &targets, &data.join("node.key")) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let Some(stdout) = child.stdout.take() else { return fail("no stdout") };
            let code = node.code.clone();
            let left = READY_WITHIN.saturating_sub(started.elapsed());
            waiting.spawn(async move { (code, tokio::time::timeout(left, ready_line(stdout)).await) });
            children.push((node.code.clone(), child));
        }
        loop {
            let next = tokio::select! {
                n = waiting.join_next() => n,
                _ = shutdown.cancelled() => return ExitCode::SUCCESS,
            };
            match next {
                None => break,
                Some(Ok((code, Ok(Ok(line))))) => {
                    lines.insert(code, line);
                }
                Some(Ok((code, Ok(Err(e))))) => return fail(&format!("node {code}: {e}")),
                Some(Ok((code, Err(_)))) => {
                    return fail(&format!("node {code} not ready within {} s", READY_WITHIN.as_secs()))
                }
                Some(Err(e)) => return fail(&e.to_string()),
            }
        }
    }
    let within = started.elapsed().as_secs_f64();
    // the demo's Prometheus, when one is installed (`prometheus` in the ready line)
    let mut prometheus = None;
    let mut ready = serde_json::json!({"ready": true, "city": hub, "leaf_listen": leaf, "nodes": lines});
    if let Some(token) = &token {
        ready["staff_token"] = token.clone().into();
    }
    if demo {
        match crate::prometheus::start(&data) {
            Ok((child, url)) => {
                eprintln!(
                    "demo: Prometheus {url}/graph?g0.expr=node%3Axf_satisfied%3Aratio1d&g0.tab=0 （满意率，各区县）"
                );
                ready["prometheus"] = url.into();
                prometheus = Some(child);
            }
            Err(e) => eprintln!("demo: no Prometheus: {e}"),
        }
    }
    println!("{ready}");
    tracing::info!(city = %hub, nodes = children.len(), seconds = within, "city ready");
    if demo {
        if let Some(office) = lines.get(&hub).and_then(|l| l["services"]["web"].as_str()) {
            eprintln!(
                "demo: 全市 {} 个节点已就绪（{within:.0} 秒）；市信访局收到的上报件：{office}/escalations",
                children.len()
            );
            eprintln!(
                "demo: 登录用户 clerk（信访局、联席办）或承办单位编号（如 320211-zjj），密码见 {}",
                data.join("staff.password").display()
            );
        }
        let targets = district_nodes
            .iter()
            .filter_map(|n| crate::demo::Target::from_ready_line(&n.code, lines.get(&n.code)?))
            .collect();
        tokio::spawn(crate::demo::feed(targets, token.clone().unwrap_or_default(), shutdown.clone()));
    }
    // each node supervises its own services and server; a node that stops ends the city
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let stopped = children.iter_mut().find_map(|(code, c)| c.try_wait().ok().flatten().map(|s| (code.clone(), s)));
        if let Some((code, status)) = stopped {
            eprintln!("xinfang up: node {code} stopped ({status}); stopping the city");
            break;
        }
    }
    stop(&mut children).await;
    // SIGTERM to its tether, which passes it on (a SIGKILL would leave Prometheus running)
    if let Some(mut p) = prometheus {
        if let Some(pid) = p.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), p.wait()).await.is_err() {
            let _ = p.kill().await;
        }
    }
    ExitCode::SUCCESS
}

/// SIGTERM to every node, SIGKILL to those not gone within 15 s.
async fn stop(children: &mut [(String, Child)]) {
    for (_, child) in children.iter_mut() {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
    }
    for (_, child) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(15), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("xinfang up: {msg}");
    ExitCode::FAILURE
}
