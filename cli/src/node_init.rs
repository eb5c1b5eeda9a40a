//! `xinfang node init --code N --out DIR [--parent-url URL | --leaf-listen ADDR] [--from FILE]`:
//! a deployable node (DESIGN.md §10). Writes into DIR:
//!
//! - `node.toml`: the Wuxi example's node file for N (or `--from FILE`), its `[nats]` set for
//!   this machine: its own server on `--listen`, and either the leaf link to the parent
//!   (`parent_urls`, `leaf_credentials`) or, on the city, the leaf listener and its users file;
//! - `leaf/`: a child's secret (mode 0600; its hash is printed for the parent's users file), or
//!   the parent's `leaf-users.toml` (kept when it exists: add each child's line to it);
//! - `systemd/xinfang-node-N.service`: `xinfang up` on that file and `DIR/data`, restarted
//!   always, with a high open-file limit;
//! - `nats-server.conf`: the node's server config as `xinfang up` writes it at each start
//!   (mode 0600; a child's holds its leaf secret);
//! - `prometheus/scrape.yml`: the Prometheus scrape job of the node, reading
//!   `prometheus/targets.json`, the target list `xinfang up` rewrites at each start
//!   (`metrics.targets_file` in `node.toml` points there).
//!
//! `xinfang up --config DIR/node.toml --data DIR/data` runs the result as it is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use xinfang_shared::config::Settings;
use xinfang_shared::ids::NodeCode;
use xinfang_shared::leaf_auth;

use crate::nats_server;

/// What `node init` was asked for.
pub struct Init {
    pub code: String,
    pub out: PathBuf,
    pub from: Option<PathBuf>,
    pub listen: String,
    pub parent_url: Option<String>,
    pub leaf_listen: Option<String>,
}

/// `xinfang node init`.
pub fn main(init: Init) -> ExitCode {
    match write(&init) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xinfang node init: {e}");
            ExitCode::from(2)
        }
    }
}

fn write(init: &Init) -> Result<Vec<String>, String> {
    let code = NodeCode::parse(&init.code).map_err(|e| format!("--code {:?}: {e}", init.code))?;
    let template = match &init.from {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("--from {}: {e}", path.display()))?,
        None => crate::wuxi::file(code.as_str())
            .map(str::to_string)
            .ok_or(format!("no example node file for {code}: pass --from FILE (a node file, DESIGN.md §8)"))?,
    };
    let mut file: toml::Table = template.parse().map_err(|e| format!("the node file: {e}"))?;
    let has_parent = file.get("node").and_then(|n| n.get("parent")).is_some();
    let out = std::path::absolute(&init.out).map_err(|e| format!("--out: {e}"))?;
    std::fs::create_dir_all(out.join("data")).map_err(|e| format!("{}: {e}", out.display()))?;
    let leaf_dir = out.join("leaf");
    let mut nats = toml::Table::new();
    nats.insert("url".into(), "".into());
    nats.insert("listen".into(), init.listen.clone().into());
    let mut lines = Vec::new();
    match (has_parent, &init.parent_url, &init.leaf_listen) {
        (true, Some(url), None) => {
            let (secret, plain) = leaf_auth::secret_file(&leaf_dir, &code)?;
            nats.insert("parent_urls".into(), toml::Value::Array(vec![url.clone().into()]));
            nats.insert("leaf_credentials".into(), secret.display().to_string().into());
            lines.push(format!("leaf secret: {}", secret.display()));
            lines.push(format!("add to the parent's nats.leaf_users file: {code} = {:?}", leaf_auth::hash(&plain)?));
        }
        (false, None, Some(listen)) => {
            let users = leaf_dir.join("leaf-users.toml");
            if !users.exists() {
                std::fs::create_dir_all(&leaf_dir).map_err(|e| format!("{}: {e}", leaf_dir.display()))?;
                let text = "# the children admitted on the leaf listener: <code> = \"<bcrypt hash>\"\n# (`xinfang node init` on each child prints its line)\n";
                std::fs::write(&users, text).map_err(|e| format!("{}: {e}", users.display()))?;
            }
            nats.insert("leaf_listen".into(), listen.clone().into());
            nats.insert("leaf_users".into(), users.display().to_string().into());
            lines.push(format!("leaf users: {}", users.display()));
        }
        (true, _, _) => return Err(format!("node {code} has a parent: pass --parent-url nats-leaf://HOST:PORT")),
        (false, _, _) => return Err(format!("node {code} is the top node: pass --leaf-listen HOST:PORT")),
    }
    file.insert("nats".into(), toml::Value::Table(nats));
    // where `xinfang up` keeps the node's Prometheus target list, and the scrape job reading it
    let prometheus = out.join("prometheus");
    let targets = prometheus.join("targets.json");
    let metrics = file.entry("metrics").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(m) = metrics.as_table_mut() {
        m.insert("targets_file".into(), targets.display().to_string().into());
    }
    let scrape = write_scrape(&prometheus, &targets)?;
    let node_file = out.join("node.toml");
    let text = format!("# written by `xinfang node init`\n{file}");
    std::fs::write(&node_file, text).map_err(|e| format!("{}: {e}", node_file.display()))?;
    let unit = write_unit(&out, &code, &node_file)?;
    // the server's config as `xinfang up` writes it at each start (under data/nats/), for an
    // operator who reads it or runs nats-server under their own supervision
    let settings = Settings::load(Some(&node_file)).map_err(|e| format!("{}: {e}", node_file.display()))?;
    let (host, port) = nats_server::client_address(&settings)?;
    let server_conf = out.join("nats-server.conf");
    nats_server::write_config(&server_conf, &out.join("data").join("nats"), &settings, &host, port)?;
    lines.insert(0, format!("node file: {}", node_file.display()));
    lines.push(format!("nats-server config: {}", server_conf.display()));
    lines.push(format!("systemd unit: {}", unit.display()));
    lines.push(format!("Prometheus scrape job: {} (targets: {})", scrape.display(), targets.display()));
    lines.push(format!("run: xinfang up --config {} --data {}", node_file.display(), out.join("data").display()));
    Ok(lines)
}

/// The Prometheus scrape job of the node (to paste under `scrape_configs:`), reading the target
/// list `xinfang up` writes at `targets`; that list starts empty.
fn write_scrape(dir: &Path, targets: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !targets.exists() {
        std::fs::write(targets, "[]\n").map_err(|e| format!("{}: {e}", targets.display()))?;
    }
    let job = format!(
        "# written by `xinfang node init`: paste under `scrape_configs:` of the Prometheus that watches\n\
         # this node, with deploy/prometheus/rules/*.yml under `rule_files:` (docs/observability.md)\n\
         - job_name: xinfang\n  honor_labels: true\n  file_sd_configs:\n    - files:\n        - {}\n",
        targets.display()
    );
    let file = dir.join("scrape.yml");
    std::fs::write(&file, job).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(file)
}

/// The systemd unit that runs the node.
fn write_unit(out: &Path, code: &NodeCode, node_file: &Path) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = out.join("systemd");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let unit = format!(
        "[Unit]\n\
         Description=xinfang node {code} (nats-server and the five services)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} up --config {file} --data {data}\n\
         WorkingDirectory={out}\n\
         Restart=always\n\
         RestartSec=2\n\
         LimitNOFILE=65536\n\
         TimeoutStopSec=30\n\
         Environment=XF_LOG=info\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exe = exe.display(),
        file = node_file.display(),
        data = out.join("data").display(),
        out = out.display(),
    );
    let path = dir.join(format!("xinfang-node-{code}.service"));
    std::fs::write(&path, unit).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
