//! Configuration (DESIGN.md §8): built-in defaults → the node file (`--config PATH`, TOML)
//! → environment `XF__SECTION__KEY`. A bad config is refused with one line naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::calendar::{Calendar, Period};
use crate::ids::{DivisionCode, NodeCode, OrganId};

/// Everything a node's services read from the node file.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub node: NodeSection,
    #[serde(default)]
    pub nats: NatsSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub calendar: CalendarSection,
    #[serde(default)]
    pub deadlines: DeadlinesSection,
    #[serde(default)]
    pub intake: IntakeSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub divisions: Vec<Division>,
    #[serde(default)]
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub categories: Vec<Category>,
    #[serde(default)]
    pub organs: Vec<Organ>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub notification: NotificationSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub web: WebSection,
    /// Sections this build does not read (kept, not refused: a newer node file still loads).
    #[serde(flatten)]
    pub other: BTreeMap<String, toml::Value>,
}

/// `[notification]`: how notices reach people (DESIGN.md §9). A channel per recipient kind
/// (`petitioner`, `organ`) from `channels`: `webhook`, `sms`, `email` or `file`; the default is
/// the webhook when `webhook_url` is set, else the file sink.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NotificationSection {
    /// Every notice is POSTed here as JSON, signed with `webhook_secret`.
    #[serde(default)]
    pub webhook_url: String,
    #[serde(default)]
    pub webhook_secret: String,
    /// First retry delay (`1s`, `30s`, `1m`…); exponential with jitter after (default `5s`).
    #[serde(default)]
    pub retry_initial: Option<String>,
    /// Longest delay between two attempts (default `10m`).
    #[serde(default)]
    pub retry_max: Option<String>,
    /// Give up and record `notification_failed` this long after the first attempt (default `24h`).
    #[serde(default)]
    pub horizon: Option<String>,
    /// HTTP SMS gateway: POST `{"to","text","notice_id"}`.
    #[serde(default)]
    pub sms_url: String,
    /// SMTP relay for e-mail (plain SMTP on a trusted network).
    #[serde(default)]
    pub smtp_host: String,
    #[serde(default)]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub smtp_from: String,
    /// File sink (one JSON line per notice), for development; default `<store>/notices.jsonl`.
    #[serde(default)]
    pub file_path: Option<PathBuf>,
    /// Recipient kind → channel.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
    /// Organ id → its e-mail address or phone number.
    #[serde(default)]
    pub contacts: BTreeMap<String, String>,
    /// Template name → text (minijinja), overriding the Chinese defaults.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// How many notification processes the node runs (default 1; issue 18: replicas): each
    /// plans and delivers the notices of its share of the cases ([`crate::ids::CaseId::share`]),
    /// the process with `store.replica` "" or "1" the first share, "2" the second, and so on.
    #[serde(default)]
    pub processes: Option<u32>,
}

impl NotificationSection {
    /// [`Self::processes`], 1 when not set.
    pub fn process_count(&self) -> u32 {
        self.processes.unwrap_or(1)
    }
}

/// `[node]`: which jurisdiction this is.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeSection {
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub parent: Option<String>,
}

/// `[nats]`: the node's NATS server.
#[derive(Debug, Clone, Deserialize)]
pub struct NatsSection {
    /// Empty: `xinfang up` starts its own server.
    #[serde(default)]
    pub url: String,
    /// Path of a `.creds` file.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// Require TLS to the server.
    #[serde(default)]
    pub tls_required: bool,
    /// Root certificate for TLS.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// For `xinfang up`'s own server: fsync every write (default true; see TOPOLOGY.md).
    #[serde(default = "yes")]
    pub sync_always: bool,
    /// For `xinfang up`'s own server: client listen address (default a free port on 127.0.0.1).
    #[serde(default)]
    pub listen: Option<String>,
    /// JetStream domain of this node's own server (DESIGN.md §10); default `xf` + node code.
    #[serde(default)]
    pub domain: Option<String>,
    /// On a parent node: where its children's leaf links arrive (`host:port`). Such a node
    /// hosts `XF_ROUTES`, sourcing the outboxes of its peers other than its own parent.
    #[serde(default)]
    pub leaf_listen: Option<String>,
    /// On a child node: the parent's leaf listeners (`nats-leaf://host:port`; several for a
    /// clustered hub).
    #[serde(default)]
    pub parent_urls: Vec<String>,
    /// On a child node: the file with the secret its leaf link presents to the parent, as
    /// user `leaf_<code>` ([`crate::leaf_auth`]).
    #[serde(default)]
    pub leaf_credentials: Option<PathBuf>,
    /// On a parent node: the TOML file of its children's leaf users (`<code> = "<bcrypt
    /// hash>"`). With it, the leaf listener admits only those children, each limited to what
    /// its own node needs; without it, the listener is open (development only).
    #[serde(default)]
    pub leaf_users: Option<PathBuf>,
    /// Seconds between pings on the leaf link: a silent cut is noticed after two missed ones.
    #[serde(default = "default_ping")]
    pub ping_interval: u64,
    /// How many servers keep a copy of each of this node's streams and buckets (JetStream
    /// replicas): 1 on a single server, 3 on a clustered hub.
    #[serde(default = "one")]
    pub replicas: usize,
    /// For `xinfang up`'s own server on a clustered hub: this server's place in the cluster.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
}

fn default_ping() -> u64 {
    2
}

fn one() -> usize {
    1
}

/// `[nats.cluster]`: one server of a node's cluster (a hub of three servers, each a member
/// with the same domain and leaf listener; DESIGN.md §10).
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterSection {
    /// The cluster's name; default the node's JetStream domain.
    #[serde(default)]
    pub name: Option<String>,
    /// This member's name, unique in the cluster (its server is `xf_<node>_<member>`).
    pub member: String,
    /// Where the other members' routes arrive (`host:port`).
    pub listen: String,
    /// The other members' route listeners (`nats-route://host:port`).
    #[serde(default)]
    pub routes: Vec<String>,
}

impl Default for NatsSection {
    /// The same defaults as a `[nats]` section with no keys.
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

fn yes() -> bool {
    true
}

/// The JetStream domain a node has unless its file names one: `xf` + its code.
pub fn default_domain(code: &str) -> String {
    format!("xf{code}")
}

/// `[store]`: where the service keeps its sled projection.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreSection {
    #[serde(default = "default_store")]
    pub path: PathBuf,
    /// Which process this is when a service runs as several on one node (issue 18: replicas):
    /// each keeps its own store (`path`) and its projections' consumers are its own
    /// (`<durable>-<replica>`), while the work consumers are shared. Empty: the only one, or
    /// the first.
    #[serde(default)]
    pub replica: String,
}

impl StoreSection {
    /// The durable name of a projection's consumer for this process.
    pub fn projection_durable(&self, durable: &str) -> String {
        if self.replica.is_empty() {
            durable.to_string()
        } else {
            format!("{durable}-{}", self.replica)
        }
    }
}

fn default_store() -> PathBuf {
    PathBuf::from("data/store")
}

impl Default for StoreSection {
    fn default() -> Self {
        Self { path: default_store(), replica: String::new() }
    }
}

/// `[http]`: intake's API address (port 0 allowed).
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSection {
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:0".into()
}

impl Default for HttpSection {
    fn default() -> Self {
        Self { listen: default_listen() }
    }
}

/// `[metrics]`: where services without an HTTP API serve `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSection {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where `xinfang up` writes the node's Prometheus target list (file_sd JSON: every
    /// service's `/metrics` address, labelled `node` and `service`); empty:
    /// `<data>/prometheus/targets.json`.
    #[serde(default)]
    pub targets_file: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self { listen: default_listen(), targets_file: String::new() }
    }
}

/// `[calendar]`: extra yearly schedules on top of the shipped 2025 and 2026 ones.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CalendarSection {
    /// A directory of `YYYY.toml` schedules, or one schedule file.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// `[deadlines]`: period overrides of the DOMAIN.md defaults.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeadlinesSection {
    #[serde(default)]
    pub periods: BTreeMap<String, String>,
}

/// `[intake]`: limits of the intake service.
#[derive(Debug, Clone, Deserialize)]
pub struct IntakeSection {
    /// Hours an idempotency key is remembered.
    #[serde(default = "default_idem_hours")]
    pub idempotency_hours: u64,
}

fn default_idem_hours() -> u64 {
    24
}

impl Default for IntakeSection {
    fn default() -> Self {
        Self { idempotency_hours: default_idem_hours() }
    }
}

/// `[auth]` (DESIGN.md §11): the node's staff credentials and the public's rate limit.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSection {
    /// The node secret for keyed hashes and sealing; absent: created under the data directory.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Requests without credentials one client address may make at once (the bucket) …
    #[serde(default = "default_public_burst")]
    pub public_burst: u32,
    /// … and per minute after that.
    #[serde(default = "default_public_per_minute")]
    pub public_per_minute: u32,
}

fn default_public_burst() -> u32 {
    30
}

fn default_public_per_minute() -> u32 {
    30
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            secret_file: None,
            tokens: Vec::new(),
            users: Vec::new(),
            public_burst: default_public_burst(),
            public_per_minute: default_public_per_minute(),
        }
    }
}

/// `[web]`: the staff and public pages (services/web) and their sessions (DESIGN.md §11).
#[derive(Debug, Clone, Deserialize)]
pub struct WebSection {
    /// Where the pages are served (port 0 allowed).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The pages are reached over HTTPS (directly or through a proxy): the session cookie is
    /// then `__Host-xf_session` with `Secure`; without TLS it is `xf_session` (a browser
    /// refuses a `__Host-` cookie that is not `Secure`).
    #[serde(default)]
    pub tls: bool,
    /// Seconds without a request after which a session ends (30 minutes).
    #[serde(default = "default_session_idle_secs")]
    pub session_idle_secs: u64,
    /// Seconds after sign-in after which a session ends whatever its use (10 hours).
    #[serde(default = "default_session_max_secs")]
    pub session_max_secs: u64,
}

fn default_session_idle_secs() -> u64 {
    30 * 60
}

fn default_session_max_secs() -> u64 {
    10 * 3600
}

impl Default for WebSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: false,
            session_idle_secs: default_session_idle_secs(),
            session_max_secs: default_session_max_secs(),
        }
    }
}

impl WebSection {
    pub fn session_idle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.session_idle_secs)
    }

    pub fn session_max(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.session_max_secs)
    }
}

/// `[[auth.tokens]]`: a bearer token, kept as the SHA-256 of its secret.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenConfig {
    pub name: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub organ_id: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    pub sha256: String,
}

/// `[[auth.users]]`: a person who signs in on the pages, with an argon2id password hash.
#[derive(Debug, Clone, Deserialize)]
pub struct UserConfig {
    pub login: String,
    #[serde(default)]
    pub name: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub organ_id: Option<String>,
    pub password_hash: String,
}

/// `[log]`: `format = "text" | "json"`, `level` as an env-filter directive.
#[derive(Debug, Clone, Deserialize)]
pub struct LogSection {
    #[serde(default = "default_log_format")]
    pub format: String,
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_format() -> String {
    "text".into()
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogSection {
    fn default() -> Self {
        Self { format: default_log_format(), level: default_log_level() }
    }
}

/// `[[divisions]]`: the area this node has jurisdiction over.
#[derive(Debug, Clone, Deserialize)]
pub struct Division {
    pub code: String,
    #[serde(default)]
    pub name: String,
    /// The division's area as a GeoJSON file (Polygon or MultiPolygon, WGS 84), for Open311
    /// requests located by `lat`/`long` (DESIGN.md §12).
    #[serde(default)]
    pub area: Option<PathBuf>,
}

/// `[[peers]]`: other nodes, for 属地 forwarding.
#[derive(Debug, Clone, Deserialize)]
pub struct Peer {
    pub code: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub divisions: Vec<String>,
    /// The peer's JetStream domain when it runs its own server (default `xf` + its code).
    #[serde(default)]
    pub domain: Option<String>,
}

/// `[[categories]]`: matter categories (事项分类).
#[derive(Debug, Clone, Deserialize)]
pub struct Category {
    pub code: String,
    #[serde(default)]
    pub name: String,
}

/// What an organ is, for the special routes of DOMAIN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrganRole {
    /// 信访局 — the node's petition bureau.
    PetitionBureau,
    Department,
    /// 政法委 — litigation-related matters.
    PoliticalLegal,
    /// 纪委监委 — misconduct reports.
    Discipline,
}

/// `[[organs]]`: an organ that can handle cases.
#[derive(Debug, Clone, Deserialize)]
pub struct Organ {
    pub id: String,
    pub name: String,
    pub role: OrganRole,
    pub node: String,
    #[serde(default)]
    pub parent: Option<String>,
}

/// `[[rules]]`: division prefix × category × kind → organ.
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    pub id: String,
    pub division_prefix: String,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
    pub organ: String,
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default)]
    pub assigned_days: Option<u32>,
}

fn default_mode() -> String {
    "transfer".into()
}

/// A config that cannot be used; `Display` is the one line an operator sees.
#[derive(Debug, thiserror::Error)]
#[error("config error: {0}")]
pub struct ConfigError(pub String);

/// Where a division is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whereabouts {
    /// In this node's own area.
    Local,
    /// In a peer's area: forward there.
    Peer(NodeCode),
}

impl Settings {
    /// Loads the node file at `path` (if any) with `XF__…` environment overrides and checks it.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError(format!("config file {} does not exist", path.display())));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        builder = builder.add_source(config::Environment::with_prefix("XF").prefix_separator("__").separator("__"));
        let raw = builder.build().map_err(|e| ConfigError(e.to_string()))?;
        let settings: Settings = raw.try_deserialize().map_err(|e| ConfigError(e.to_string()))?;
        settings.check()?;
        Ok(settings)
    }

    /// Parses a node file from text (no environment), for tests and tools.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let settings: Settings = toml::from_str(text).map_err(|e| ConfigError(e.message().to_string()))?;
        settings.check()?;
        Ok(settings)
    }

    /// Cross-checks: codes parse, organs and rules refer to things that exist, one bureau.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: String| Err(ConfigError(format!("{key}: {msg}")));
        if let Err(e) = NodeCode::parse(&self.node.code) {
            return bad("node.code", e.0);
        }
        if let Some(p) = &self.node.parent {
            if let Err(e) = NodeCode::parse(p) {
                return bad("node.parent", e.0);
            }
        }
        if self.divisions.is_empty() {
            return bad("divisions", "at least one [[divisions]] entry is required".into());
        }
        for (i, d) in self.divisions.iter().enumerate() {
            if let Err(e) = DivisionCode::parse(&d.code) {
                return bad(&format!("divisions[{i}].code"), e.0);
            }
        }
        for (i, p) in self.peers.iter().enumerate() {
            if let Err(e) = NodeCode::parse(&p.code) {
                return bad(&format!("peers[{i}].code"), e.0);
            }
            for (j, d) in p.divisions.iter().enumerate() {
                if let Err(e) = DivisionCode::parse(d) {
                    return bad(&format!("peers[{i}].divisions[{j}]"), e.0);
                }
            }
        }
        let domains = self.nats.domain.iter().map(|d| ("nats.domain".to_string(), d));
        let peer_domains = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.domain.as_ref().map(|d| (format!("peers[{i}].domain"), d)));
        for (key, d) in domains.chain(peer_domains) {
            if d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return bad(&key, format!("{d:?}: letters, digits, '_' and '-' only"));
            }
        }
        if !self.nats.parent_urls.is_empty() && self.node.parent.is_none() {
            return bad("nats.parent_urls", "a node with parent links needs node.parent".into());
        }
        for (i, u) in self.nats.parent_urls.iter().enumerate() {
            if !u.starts_with("nats-leaf://") && !u.starts_with("nats://") && !u.starts_with("tls://") {
                return bad(&format!("nats.parent_urls[{i}]"), format!("{u:?}: expected nats-leaf://host:port"));
            }
        }
        let processes = self.notification.process_count();
        if !(1..=64).contains(&processes) {
            return bad("notification.processes", format!("{processes}: 1 to 64"));
        }
        let replica = &self.store.replica;
        if replica.len() > 16 || !replica.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return bad("store.replica", format!("{replica:?}: up to 16 letters, digits, '-' or '_'"));
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return bad("nats.replicas", format!("{}: JetStream keeps 1 to 5 replicas", self.nats.replicas));
        }
        if let Some(c) = &self.nats.cluster {
            let names = c.name.iter().map(|n| ("nats.cluster.name", n)).chain([("nats.cluster.member", &c.member)]);
            for (key, n) in names {
                if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return bad(key, format!("{n:?}: letters, digits, '_' and '-' only"));
                }
            }
            if c.listen.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) {
                return bad("nats.cluster.listen", format!("{:?}: expected host:port", c.listen));
            }
            for (i, r) in c.routes.iter().enumerate() {
                if !r.starts_with("nats-route://") && !r.starts_with("nats://") {
                    return bad(
                        &format!("nats.cluster.routes[{i}]"),
                        format!("{r:?}: expected nats-route://host:port"),
                    );
                }
            }
        }
        for (i, o) in self.organs.iter().enumerate() {
            if let Err(e) = OrganId::parse(&o.id) {
                return bad(&format!("organs[{i}].id"), e.0);
            }
        }
        let bureaus =
            self.organs.iter().filter(|o| o.role == OrganRole::PetitionBureau && o.node == self.node.code).count();
        if bureaus != 1 {
            return bad(
                "organs",
                format!("exactly one petition_bureau organ of node {} is required, found {bureaus}", self.node.code),
            );
        }
        for (i, r) in self.rules.iter().enumerate() {
            if !self.organs.iter().any(|o| o.id == r.organ) {
                return bad(&format!("rules[{i}].organ"), format!("no organ with id {:?}", r.organ));
            }
            for c in &r.categories {
                if !self.categories.iter().any(|k| &k.code == c) {
                    return bad(&format!("rules[{i}].categories"), format!("unknown category {c:?}"));
                }
            }
        }
        for (key, value) in &self.deadlines.periods {
            if let Err(e) = Period::parse(value) {
                return bad(&format!("deadlines.periods.{key}"), e);
            }
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad("log.format", "must be \"text\" or \"json\"".into());
        }
        self.calendar()?;
        self.credentials()?;
        if self.web.session_idle_secs == 0 || self.web.session_max_secs < self.web.session_idle_secs {
            return bad(
                "web.session_max_secs",
                "sessions need an idle time > 0 and a lifetime at least as long".into(),
            );
        }
        if self.auth.public_burst == 0 || self.auth.public_per_minute == 0 {
            return bad("auth.public_burst", "the public's rate limit must allow at least one request".into());
        }
        Ok(())
    }

    /// The staff credentials of `[auth]`, checked: known roles, an `organ_id` of this node's
    /// organs for `organ`, a channel for `integration`, well-formed hashes, unique names.
    pub fn credentials(&self) -> Result<crate::access::Credentials, ConfigError> {
        use crate::access::{Credentials, Identity, Role, TokenEntry, UserEntry};
        let bad = |key: String, msg: String| ConfigError(format!("{key}: {msg}"));
        let identity = |key: &str,
                        name: &str,
                        display: &str,
                        roles: &[String],
                        organ: &Option<String>,
                        channel: &Option<String>| {
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(bad(format!("{key}.name"), format!("{name:?}: 1–64 characters, no spaces")));
            }
            if roles.is_empty() {
                return Err(bad(format!("{key}.roles"), "at least one role is required".into()));
            }
            let mut parsed = Vec::new();
            for r in roles {
                let role = Role::ALL.into_iter().find(|x| x.as_str() == r).ok_or_else(|| {
                    bad(
                        format!("{key}.roles"),
                        format!("unknown role {r:?} (organ, bureau, office, auditor, integration)"),
                    )
                })?;
                parsed.push(role);
            }
            let organ_id = match organ {
                None if parsed.contains(&Role::Organ) => {
                    return Err(bad(format!("{key}.organ_id"), "the organ role needs organ_id".into()))
                }
                None => None,
                Some(o) => {
                    if !self.organs.iter().any(|x| &x.id == o && x.node == self.node.code) {
                        return Err(bad(
                            format!("{key}.organ_id"),
                            format!("no organ {o:?} of node {}", self.node.code),
                        ));
                    }
                    Some(OrganId::parse(o).map_err(|e| bad(format!("{key}.organ_id"), e.0))?)
                }
            };
            let channel = match channel {
                None if parsed.contains(&Role::Integration) => {
                    return Err(bad(format!("{key}.channel"), "the integration role needs a channel".into()))
                }
                None => None,
                Some(c) => Some(
                    crate::petition::Channel::parse(c)
                        .ok_or_else(|| bad(format!("{key}.channel"), format!("unknown channel {c:?}")))?,
                ),
            };
            let display = if display.is_empty() { name.to_string() } else { display.to_string() };
            Ok(Identity { name: name.to_string(), display, roles: parsed, organ_id, channel })
        };
        let mut names = std::collections::BTreeSet::new();
        let mut out = Credentials::default();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let key = format!("auth.tokens[{i}]");
            let identity = identity(&key, &t.name, "", &t.roles, &t.organ_id, &t.channel)?;
            let sha256: [u8; 32] = hex::decode(&t.sha256).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
                bad(format!("{key}.sha256"), "must be 64 hex digits (xinfang token add prints it)".into())
            })?;
            if !names.insert(t.name.clone()) {
                return Err(bad(format!("{key}.name"), format!("{:?} is used twice", t.name)));
            }
            out.tokens.push(TokenEntry { identity, sha256 });
        }
        for (i, u) in self.auth.users.iter().enumerate() {
            let key = format!("auth.users[{i}]");
            let identity = identity(&key, &u.login, &u.name, &u.roles, &u.organ_id, &None)?;
            if identity.has(Role::Integration) {
                return Err(bad(format!("{key}.roles"), "integration is a role for tokens, not users".into()));
            }
            if !u.password_hash.starts_with("$argon2id$")
                || argon2::password_hash::PasswordHash::new(&u.password_hash).is_err()
            {
                return Err(bad(
                    format!("{key}.password_hash"),
                    "must be an argon2id hash (xinfang user add prints it)".into(),
                ));
            }
            if !names.insert(u.login.clone()) {
                return Err(bad(format!("{key}.login"), format!("{:?} is used twice", u.login)));
            }
            out.users.push(UserEntry { identity, password_hash: u.password_hash.clone() });
        }
        Ok(out)
    }

    /// This node's code.
    pub fn node_code(&self) -> NodeCode {
        NodeCode::parse(&self.node.code).expect("checked at load")
    }

    /// This node's JetStream domain.
    pub fn domain(&self) -> String {
        self.nats.domain.clone().unwrap_or_else(|| default_domain(&self.node.code))
    }

    /// Whether this node runs as its own server in a city of leaf links (DESIGN.md §10),
    /// rather than sharing one server with other nodes (§6, development and tests).
    pub fn linked(&self) -> bool {
        self.nats.leaf_listen.is_some() || !self.nats.parent_urls.is_empty()
    }

    /// The JetStream domain of node `code`: this node's, or a peer's.
    pub fn domain_of(&self, code: &NodeCode) -> String {
        if code.as_str() == self.node.code {
            return self.domain();
        }
        self.peers
            .iter()
            .find(|p| p.code == code.as_str())
            .and_then(|p| p.domain.clone())
            .unwrap_or_else(|| default_domain(code.as_str()))
    }

    /// On a node hosting `XF_ROUTES`: the children whose outboxes it sources (its peers other
    /// than its own parent).
    pub fn children(&self) -> Vec<NodeCode> {
        if self.nats.leaf_listen.is_none() {
            return vec![];
        }
        let mut nodes: Vec<NodeCode> = self
            .peers
            .iter()
            .filter(|p| Some(p.code.as_str()) != self.node.parent.as_deref() && p.code != self.node.code)
            .filter_map(|p| NodeCode::parse(&p.code).ok())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// The nodes whose outboxes feed this node's inbox: the peers and the parent.
    pub fn inbox_sources(&self) -> Vec<NodeCode> {
        let mut nodes: Vec<NodeCode> = self
            .peers
            .iter()
            .map(|p| p.code.as_str())
            .chain(self.node.parent.as_deref())
            .filter_map(|c| NodeCode::parse(c).ok())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Whether a division is known to this node, and where it is handled. The most specific
    /// (longest) matching prefix wins, so a peer's street-level area inside this node's
    /// county code is still the peer's.
    pub fn whereabouts(&self, division: &DivisionCode) -> Option<Whereabouts> {
        let own =
            self.divisions.iter().filter(|d| division.is_within(&d.code)).map(|d| (d.code.len(), Whereabouts::Local));
        let peers = self.peers.iter().flat_map(|p| {
            p.divisions
                .iter()
                .filter(|d| division.is_within(d))
                .map(move |d| (d.len(), Whereabouts::Peer(NodeCode::parse(&p.code).expect("checked"))))
        });
        own.chain(peers).max_by_key(|(len, _)| *len).map(|(_, w)| w)
    }

    /// True when `code` is a category of the node file.
    pub fn has_category(&self, code: &str) -> bool {
        self.categories.iter().any(|c| c.code == code)
    }

    /// The period configured for `step`, or `default`.
    pub fn period(&self, step: &str, default: Period) -> Period {
        self.deadlines.periods.get(step).and_then(|p| Period::parse(p).ok()).unwrap_or(default)
    }

    /// The shipped schedules plus those under `calendar.path`.
    pub fn calendar(&self) -> Result<Calendar, ConfigError> {
        let mut cal = Calendar::shipped();
        let Some(path) = &self.calendar.path else {
            return Ok(cal);
        };
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| ConfigError(format!("calendar.path: {}: {e}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.clone()]
        };
        for f in files {
            let text =
                std::fs::read_to_string(&f).map_err(|e| ConfigError(format!("calendar.path: {}: {e}", f.display())))?;
            cal.load_toml(&text).map_err(|e| ConfigError(format!("calendar.path: {}: {e}", f.display())))?;
        }
        Ok(cal)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small node file like the acceptance suite's.
    pub const NODE: &str = r#"
[node]
code = "320211"
name = "滨湖区"
parent = "320200"

[[divisions]]
code = "320211"
name = "滨湖区"

[[peers]]
code = "320213"
name = "梁溪区"
divisions = ["320213", "320211999"]

[[categories]]
code = "urban_construction"
name = "城乡建设"

[[organs]]
id = "320211-xfj"
name = "滨湖区信访局"
role = "petition_bureau"
node = "320211"

[[organs]]
id = "320211-zjj"
name = "滨湖区住房和城乡建设局"
role = "department"
node = "320211"
parent = "320200-zjj"

[[rules]]
id = "housing"
division_prefix = "320211"
categories = ["urban_construction"]
organ = "320211-zjj"
"#;

    #[test]
    fn loads_and_locates_divisions() {
        let s = Settings::from_toml(NODE).unwrap();
        let d = |c: &str| DivisionCode::parse(c).unwrap();
        assert_eq!(s.whereabouts(&d("320211001")), Some(Whereabouts::Local));
        assert_eq!(s.whereabouts(&d("320213")), Some(Whereabouts::Peer(NodeCode::parse("320213").unwrap())));
        assert_eq!(
            s.whereabouts(&d("320211999001")),
            Some(Whereabouts::Peer(NodeCode::parse("320213").unwrap())),
            "the longer prefix wins"
        );
        assert_eq!(s.whereabouts(&d("990101")), None);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                NODE.replace(
                    "code = \"320211\"\nname = \"滨湖区\"\nparent",
                    "code = \"3202\"\nname = \"滨湖区\"\nparent",
                ),
                "node.code",
            ),
            (NODE.replace("organ = \"320211-zjj\"", "organ = \"nobody\""), "rules[0].organ"),
            (NODE.replace("role = \"petition_bureau\"", "role = \"department\""), "organs"),
            (format!("{NODE}\n[deadlines.periods]\nacceptance = \"15x\"\n"), "deadlines.periods.acceptance"),
            (format!("{NODE}\n[notification]\nprocesses = 0\n"), "notification.processes"),
        ];
        for (text, key) in cases {
            let e = Settings::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(key), "{e} should name {key}");
        }
    }
}
