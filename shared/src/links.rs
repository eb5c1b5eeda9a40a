//! The streams that carry a node's cross-node traffic (DESIGN.md §6, §10), how they are
//! provisioned, and the watch over the links. Which streams source what is decided from the
//! node file alone ([`routes`], [`inbox`], pure); [`provision`] makes the server match it;
//! [`Links::watch`] probes each linked node's JetStream and re-arms the sources that read from
//! it when its link comes back, so catch-up does not wait on the server's fixed source retry
//! timers (10–30 s, minutes after a long cut; TOPOLOGY.md).
//!
//! - One shared server (development, tests): `XF_INBOX_N` sources each peer's `XF_OUTBOX_M`,
//!   filtered to `xf.M.out.N.>`.
//! - A city of leaf links: a parent (a node with `nats.leaf_listen`) hosts `XF_ROUTES`, which
//!   sources its own outbox and each child's outbox across the child's JetStream domain; every
//!   node's inbox sources the `XF_ROUTES` it hangs under (its own, its parent's, or both),
//!   taking what is for it. `XF_ROUTES` tags each message with the node it came from
//!   (`xfr.<origin>.…`, a subject transform per source), and an inbox takes only messages whose
//!   subject names their origin as sender, so no child can speak for another. Routes and inboxes
//!   capture no subjects, so no two streams of the account store the same message.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::stream::{self, External, Source, SubjectTransform};
use async_nats::jetstream::Context;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::ids::NodeCode;
use crate::ledger::{duplicate_window, ensure_stream, ReadError};
use crate::subjects;
use crate::time::{now_cst, rfc3339, Instant};

/// The hub's stream of every message between its nodes.
pub const ROUTES: &str = "XF_ROUTES";

/// One source of a stream: a stream, in this domain or another, and the subjects taken.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sourced {
    pub stream: String,
    /// `None`: the same server's domain.
    pub domain: Option<String>,
    pub take: Take,
    /// The subject prefix its messages travel under from the other domain, so a leaf link's
    /// permissions can let through exactly its own ([`delivery_up`], [`delivery_down`]).
    pub delivery: Option<String>,
}

/// Which subjects a source takes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Take {
    /// Those under the filter, as they are.
    Filter(String),
    /// Those matching a transform's source, renamed to its destination; nothing else.
    Transform(Vec<(String, String)>),
}

impl Sourced {
    fn to_source(&self) -> Source {
        let (filter_subject, subject_transforms) = match &self.take {
            Take::Filter(f) => (Some(f.clone()), vec![]),
            Take::Transform(t) => (
                None,
                t.iter()
                    .map(|(src, dest)| SubjectTransform { source: src.clone(), destination: dest.clone() })
                    .collect(),
            ),
        };
        Source {
            name: self.stream.clone(),
            filter_subject,
            subject_transforms,
            // set by hand: async-nats turns `domain` into `external` only when creating a stream
            external: self
                .domain
                .as_ref()
                .map(|d| External { api_prefix: format!("$JS.{d}.API"), delivery_prefix: self.delivery.clone() }),
            ..Default::default()
        }
    }
}

/// The first token of every subject in `XF_ROUTES`: `xfr.<origin>.<subject as sent>`, the
/// origin being the node whose outbox the message was sourced from — told by the source it
/// came in on, not by anything the sender wrote.
pub const ROUTED: &str = "xfr";

/// Where the messages of a child's outbox travel up its leaf link to the parent's
/// `XF_ROUTES`.
pub fn delivery_up(child: &NodeCode) -> String {
    format!("xfu.{child}")
}

/// Where the messages of `XF_ROUTES` travel down a leaf link to the child's inbox.
pub fn delivery_down(child: &NodeCode) -> String {
    format!("xfd.{child}")
}

/// What `XF_ROUTES` sources on this node, if it hosts one: its own outbox and its children's,
/// each message renamed `xfr.<origin>.…` by the source it arrived on.
pub fn routes(settings: &Settings) -> Option<Vec<Sourced>> {
    settings.nats.leaf_listen.as_ref()?;
    let node = settings.node_code();
    let tagged = |origin: &NodeCode| Take::Transform(vec![(">".into(), format!("{ROUTED}.{origin}.>"))]);
    let own = Sourced { stream: subjects::outbox_stream(&node), domain: None, take: tagged(&node), delivery: None };
    let children = settings.children().into_iter().map(|child| Sourced {
        stream: subjects::outbox_stream(&child),
        domain: Some(settings.domain_of(&child)),
        take: tagged(&child),
        delivery: Some(delivery_up(&child)),
    });
    Some(std::iter::once(own).chain(children).collect())
}

/// What this node's `XF_INBOX` sources. From an `XF_ROUTES`, only what each node of the city
/// sent in its own name: `xfr.S.xf.S.out.N.…` becomes `xf.S.out.N.…` again, and a message whose
/// subject names a sender other than its origin matches nothing and stays out (DESIGN.md §10).
pub fn inbox(settings: &Settings) -> Vec<Sourced> {
    let node = settings.node_code();
    if !settings.linked() {
        return settings
            .inbox_sources()
            .into_iter()
            .filter(|peer| *peer != node)
            .map(|peer| Sourced {
                stream: subjects::outbox_stream(&peer),
                domain: None,
                take: Take::Filter(format!("xf.{peer}.out.{node}.>")),
                delivery: None,
            })
            .collect();
    }
    let own_name = Take::Transform(
        settings
            .inbox_sources()
            .into_iter()
            .filter(|sender| *sender != node)
            .map(|s| (format!("{ROUTED}.{s}.xf.{s}.out.{node}.>"), format!("xf.{s}.out.{node}.>")))
            .collect(),
    );
    let mut sources = Vec::new();
    if settings.nats.leaf_listen.is_some() {
        sources.push(Sourced { stream: ROUTES.into(), domain: None, take: own_name.clone(), delivery: None });
    }
    if let (Some(parent), false) = (&settings.node.parent, settings.nats.parent_urls.is_empty()) {
        if let Ok(parent) = NodeCode::parse(parent) {
            sources.push(Sourced {
                stream: ROUTES.into(),
                domain: Some(settings.domain_of(&parent)),
                take: own_name,
                delivery: Some(delivery_down(&node)),
            });
        }
    }
    sources
}

/// Creates or updates this node's `XF_ROUTES` (on a parent) and `XF_INBOX_N`, with exactly the
/// sources the node file calls for: reconciled, never appended to (the server refuses the same
/// source twice, error 10140), so a restart changes nothing.
pub async fn provision(js: &Context, settings: &Settings) -> Result<(), ReadError> {
    let node = settings.node_code();
    if let Some(sources) = routes(settings) {
        let description = format!("messages between node {node} and its children");
        ensure_stream(js, sourcing(ROUTES.into(), description, &sources, settings.nats.replicas)).await?;
    }
    let description = format!("messages for node {node} from other nodes");
    let inbox = sourcing(subjects::inbox_stream(&node), description, &inbox(settings), settings.nats.replicas);
    ensure_stream(js, inbox).await?;
    Ok(())
}

/// A stream with no subjects of its own that takes `sources`, kept on `replicas` servers.
fn sourcing(name: String, description: String, sources: &[Sourced], replicas: usize) -> stream::Config {
    let mut sources = sources.to_vec();
    sources.sort();
    sources.dedup_by(|a, b| a.stream == b.stream && a.domain == b.domain);
    stream::Config {
        name,
        description: Some(description),
        subjects: vec![],
        storage: stream::StorageType::File,
        duplicate_window: duplicate_window(),
        sources: Some(sources.iter().map(Sourced::to_source).collect()),
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// How often each linked node's JetStream is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// What is known of one link: up or down, since when.
#[derive(Debug, Clone, Copy)]
struct Link {
    connected: bool,
    since: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// By node code: the parent and the children this node routes for.
    links: BTreeMap<String, Link>,
    outbox_pending: u64,
    inbox_lag: u64,
    /// The outbox's last sequence when the parent last told its lag.
    outbox_seen: Option<(u64, u64)>,
    /// The last known leader of each `XF_ROUTES` the inbox reads, by domain ("": this
    /// server's).
    routes_leaders: BTreeMap<String, String>,
}

/// A node's links to its parent and children (DESIGN.md §10): watched, re-armed, reported.
pub struct Links {
    client: async_nats::Client,
    js: Context,
    settings: Settings,
    state: Mutex<State>,
    up: IntGaugeVec,
    since: IntGaugeVec,
    pending: IntGauge,
    lag: IntGauge,
    rearmed: IntCounterVec,
    streams: StreamGauges,
}

/// What JetStream says of this node's streams and their sources (no NATS exporter is
/// installable beside the nodes, so the services read it themselves).
struct StreamGauges {
    messages: IntGaugeVec,
    bytes: IntGaugeVec,
    source_lag: IntGaugeVec,
    source_active: IntGaugeVec,
}

impl StreamGauges {
    fn register(registry: &Registry, service: &str) -> Self {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(format!("xf_{service}_{name}"), help), labels).expect("valid");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        Self {
            messages: gauge("stream_messages", "Messages in this node's stream", &["stream"]),
            bytes: gauge("stream_bytes", "Bytes in this node's stream", &["stream"]),
            source_lag: gauge(
                "source_lag",
                "Messages a stream's source has not copied yet, as JetStream tells it",
                &["stream", "source"],
            ),
            source_active: gauge(
                "source_active_seconds",
                "Seconds since a stream's source was last active (-1: never)",
                &["stream", "source"],
            ),
        }
    }

    /// Records `info`; sources of one name (one per domain) are added up.
    fn record(&self, info: &stream::Info) {
        let name = info.config.name.as_str();
        self.messages.with_label_values(&[name]).set(info.state.messages as i64);
        self.bytes.with_label_values(&[name]).set(info.state.bytes as i64);
        let mut by: BTreeMap<&str, (u64, Option<Duration>)> = BTreeMap::new();
        for src in &info.sources {
            let entry = by.entry(src.name.as_str()).or_insert((0, None));
            entry.0 += src.lag;
            entry.1 = match (entry.1, src.active) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for (source, (lag, active)) in by {
            self.source_lag.with_label_values(&[name, source]).set(lag as i64);
            self.source_active.with_label_values(&[name, source]).set(active.map_or(-1, |d| d.as_secs() as i64));
        }
    }
}

impl Links {
    /// The links of the node `settings` describes, with their metrics in `registry` under
    /// `xf_<service>_…`.
    pub fn new(client: async_nats::Client, settings: Settings, registry: &Registry, service: &str) -> Arc<Self> {
        let up = IntGaugeVec::new(
            Opts::new(format!("xf_{service}_link_up"), "Whether the link to a node is up (1) or down (0)"),
            &["link"],
        )
        .expect("valid");
        let since = IntGaugeVec::new(
            Opts::new(format!("xf_{service}_link_since_timestamp_seconds"), "When the link last went up or down"),
            &["link"],
        )
        .expect("valid");
        let pending =
            IntGauge::new(format!("xf_{service}_outbox_pending"), "Outbox messages the parent has not sourced yet")
                .expect("valid");
        let lag = IntGauge::new(format!("xf_{service}_inbox_lag"), "Messages for this node not yet in its inbox")
            .expect("valid");
        let rearmed = IntCounterVec::new(
            Opts::new(
                format!("xf_{service}_link_rearms_total"),
                "Sources re-armed when a link came back (link: the node), or the inbox's source when XF_ROUTES got a new leader (link: XF_ROUTES)",
            ),
            &["link"],
        )
        .expect("valid");
        registry.register(Box::new(up.clone())).expect("register");
        registry.register(Box::new(since.clone())).expect("register");
        registry.register(Box::new(pending.clone())).expect("register");
        registry.register(Box::new(lag.clone())).expect("register");
        registry.register(Box::new(rearmed.clone())).expect("register");
        let streams = StreamGauges::register(registry, service);
        let js = async_nats::jetstream::new(client.clone());
        Arc::new(Self { client, js, settings, state: Mutex::default(), up, since, pending, lag, rearmed, streams })
    }

    /// The linked nodes: the parent (when this node links to one), then the children.
    fn linked(&self) -> Vec<NodeCode> {
        self.parent().into_iter().chain(self.settings.children()).collect()
    }

    /// The parent, when this node is linked to one (a child in a city of leaf links).
    fn parent(&self) -> Option<NodeCode> {
        let parent = self.settings.node.parent.as_deref().filter(|_| !self.settings.nats.parent_urls.is_empty());
        parent.and_then(|p| NodeCode::parse(p).ok())
    }

    /// `GET /v1/node/links`: `{"node","parent":{"connected","since"},"children":{…},"outbox":{"pending"},"inbox":{"lag"}}`.
    pub fn view(&self) -> Value {
        let state = self.state.lock().expect("links lock");
        let link =
            |code: &str| state.links.get(code).map(|l| json!({"connected": l.connected, "since": rfc3339(l.since)}));
        let children: serde_json::Map<String, Value> =
            self.settings.children().iter().filter_map(|c| link(c.as_str()).map(|l| (c.to_string(), l))).collect();
        json!({
            "ok": true,
            "node": self.settings.node.code,
            "linked": self.settings.linked(),
            "parent": self.parent().and_then(|p| link(p.as_str())),
            "children": children,
            "outbox": {"pending": state.outbox_pending},
            "inbox": {"lag": state.inbox_lag},
        })
    }

    /// Probes every linked node each second until `shutdown`; a link that comes back gets the
    /// sources reading from it re-armed.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let nodes = self.linked();
        loop {
            for node in &nodes {
                let domain = self.settings.domain_of(node);
                let remote = async_nats::jetstream::with_domain(self.client.clone(), &domain);
                let connected = matches!(tokio::time::timeout(PROBE_EVERY, remote.query_account()).await, Ok(Ok(_)));
                let was = self.state.lock().expect("links lock").links.get(node.as_str()).copied();
                if was.map(|l| l.connected) != Some(connected) {
                    let now = now_cst();
                    self.state
                        .lock()
                        .expect("links lock")
                        .links
                        .insert(node.to_string(), Link { connected, since: now });
                    self.up.with_label_values(&[node.as_str()]).set(connected.into());
                    self.since.with_label_values(&[node.as_str()]).set(now.timestamp());
                    tracing::info!(link = %node, connected, "link changed");
                    // a link seen down, or not yet seen, that is up now: the server's sources
                    // reading from it may be waiting out their retry backoff
                    if connected {
                        match self.rearm(&domain).await {
                            Ok(n) if n > 0 => {
                                self.rearmed.with_label_values(&[node.as_str()]).inc();
                                tracing::info!(link = %node, sources = n, "sources re-armed")
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(link = %node, error = %e, "could not re-arm the sources"),
                        }
                    }
                }
            }
            self.follow_routes_leaders().await;
            self.measure().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
    }

    /// Removes the sources that read from `domain` and adds them back (two stream updates):
    /// the server then resumes each from its last sourced sequence at once. Returns how many.
    async fn rearm(&self, domain: &str) -> Result<usize, ReadError> {
        let api = format!("$JS.{domain}.API");
        let node = self.settings.node_code();
        let mut streams = vec![subjects::inbox_stream(&node)];
        if routes(&self.settings).is_some() {
            streams.push(ROUTES.to_string());
        }
        self.rearm_where(&streams, |src| src.external.as_ref().is_some_and(|x| x.api_prefix == api)).await
    }

    /// Re-arms the inbox's source from the `XF_ROUTES` of `domain` (`None`: this server's).
    /// The server's consumer behind that source lives with the stream's leader: when the
    /// leader changes (a server of a clustered hub lost) the source would wait out its retry
    /// timers (40 s seen) before it asked the new one.
    async fn rearm_routes(&self, domain: Option<&str>) -> Result<usize, ReadError> {
        let api = domain.map(|d| format!("$JS.{d}.API"));
        let inbox = [subjects::inbox_stream(&self.settings.node_code())];
        self.rearm_where(&inbox, |src| {
            src.name == ROUTES && src.external.as_ref().map(|x| &x.api_prefix) == api.as_ref()
        })
        .await
    }

    /// Removes the sources of `streams` that `reads` picks and adds them back.
    async fn rearm_where(&self, streams: &[String], reads: impl Fn(&Source) -> bool) -> Result<usize, ReadError> {
        let mut count = 0;
        for name in streams {
            let mut s = self.js.get_stream(name).await.map_err(|e| ReadError(format!("stream {name}: {e}")))?;
            let config = s.info().await.map_err(|e| ReadError(format!("stream {name}: {e}")))?.config.clone();
            let sources = config.sources.clone().unwrap_or_default();
            let (from, rest): (Vec<Source>, Vec<Source>) = sources.into_iter().partition(|src| reads(src));
            if from.is_empty() {
                continue;
            }
            ensure_stream(&self.js, stream::Config { sources: Some(rest), ..config.clone() }).await?;
            ensure_stream(&self.js, config).await?;
            count += from.len();
        }
        Ok(count)
    }

    /// Asks each `XF_ROUTES` the inbox reads for its leader; re-arms the inbox's source from
    /// one whose leader changed.
    async fn follow_routes_leaders(&self) {
        for source in inbox(&self.settings).into_iter().filter(|s| s.stream == ROUTES) {
            let domain = source.domain.as_deref();
            let js = match domain {
                Some(d) => async_nats::jetstream::with_domain(self.client.clone(), d),
                None => self.js.clone(),
            };
            let asked = tokio::time::timeout(PROBE_EVERY, js.get_stream(ROUTES)).await;
            let Ok(Ok(routes)) = asked else { continue };
            let Some(leader) = routes.cached_info().cluster.as_ref().and_then(|c| c.leader.clone()) else { continue };
            let key = domain.unwrap_or_default().to_string();
            let before = self.state.lock().expect("links lock").routes_leaders.insert(key, leader.clone());
            if before.is_some_and(|b| b != leader) {
                match self.rearm_routes(domain).await {
                    Ok(n) => {
                        self.rearmed.with_label_values(&[ROUTES]).inc();
                        tracing::info!(%leader, sources = n, "XF_ROUTES has a new leader; inbox source re-armed")
                    }
                    Err(e) => tracing::warn!(%leader, error = %e, "could not re-arm the inbox source"),
                }
            }
        }
    }

    /// Reads the inbox lag and the outbox's pending count from the servers.
    async fn measure(&self) {
        let node = self.settings.node_code();
        let info = |name: String| async move {
            let mut s = tokio::time::timeout(PROBE_EVERY, self.js.get_stream(name)).await.ok()?.ok()?;
            let info = tokio::time::timeout(PROBE_EVERY, s.info()).await.ok()?.ok()?.clone();
            self.streams.record(&info);
            Some(info)
        };
        info(subjects::case_stream(&node)).await;
        let lag = info(subjects::inbox_stream(&node)).await.map(|i| i.sources.iter().map(|x| x.lag).sum::<u64>());
        let outbox_last = info(subjects::outbox_stream(&node)).await.map(|i| i.state.last_sequence);
        if self.parent().is_none() && !self.settings.children().is_empty() {
            // the top node's XF_ROUTES, sourcing every child's outbox
            info(ROUTES.to_string()).await;
        }
        // the parent's XF_ROUTES (or this node's own, on the top node) knows how far behind
        // the outbox its source is
        let routes_js = match self.parent() {
            Some(parent) => async_nats::jetstream::with_domain(self.client.clone(), self.settings.domain_of(&parent)),
            None => self.js.clone(),
        };
        let told = match tokio::time::timeout(PROBE_EVERY, routes_js.get_stream(ROUTES)).await {
            Ok(Ok(mut s)) => match tokio::time::timeout(PROBE_EVERY, s.info()).await {
                Ok(Ok(info)) => info.sources.iter().find(|x| x.name == subjects::outbox_stream(&node)).map(|x| x.lag),
                _ => None,
            },
            _ => None,
        };
        let mut state = self.state.lock().expect("links lock");
        if let Some(lag) = lag {
            state.inbox_lag = lag;
        }
        match (told, outbox_last) {
            (Some(lag), Some(last)) => {
                state.outbox_pending = lag;
                state.outbox_seen = Some((lag, last));
            }
            // the parent is out of reach: what it lacked then, and all written since
            (None, Some(last)) => {
                if let Some((lag, then)) = state.outbox_seen {
                    state.outbox_pending = lag + last.saturating_sub(then);
                } else if self.settings.linked() {
                    state.outbox_pending = last;
                }
            }
            _ => {}
        }
        self.pending.set(state.outbox_pending as i64);
        self.lag.set(state.inbox_lag as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra_nats: &str, node: &str, parent: Option<&str>, peers: &[&str]) -> Settings {
        let parent = parent.map(|p| format!("parent = \"{p}\"")).unwrap_or_default();
        let peers: String =
            peers.iter().map(|p| format!("[[peers]]\ncode = \"{p}\"\nname = \"x\"\ndivisions = [\"{p}\"]\n")).collect();
        Settings::from_toml(&format!(
            "[node]\ncode = \"{node}\"\nname = \"n\"\n{parent}\n[nats]\nurl = \"\"\n{extra_nats}\n[[divisions]]\ncode = \"{node}\"\nname = \"n\"\n{peers}\n[[organs]]\nid = \"{node}-xfj\"\nname = \"信访局\"\nrole = \"petition_bureau\"\nnode = \"{node}\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn on_one_server_the_inbox_sources_each_peers_outbox() {
        let s = settings("", "320211", Some("320200"), &["320213", "320200"]);
        assert!(routes(&s).is_none());
        let got: Vec<_> = inbox(&s).into_iter().map(|x| (x.stream, x.domain, x.take)).collect();
        assert_eq!(
            got,
            [
                ("XF_OUTBOX_320200".to_string(), None, Take::Filter("xf.320200.out.320211.>".to_string())),
                ("XF_OUTBOX_320213".to_string(), None, Take::Filter("xf.320213.out.320211.>".to_string())),
            ]
        );
    }

    #[test]
    fn a_hub_routes_its_children_across_their_domains_and_a_child_reads_the_hubs_routes() {
        let hub = settings("leaf_listen = \"127.0.0.1:7422\"", "320200", None, &["320211", "320213"]);
        let routes = routes(&hub).unwrap();
        assert_eq!(routes.len(), 3);
        assert_eq!((routes[0].stream.as_str(), routes[0].domain.as_deref()), ("XF_OUTBOX_320200", None));
        assert_eq!((routes[1].stream.as_str(), routes[1].domain.as_deref()), ("XF_OUTBOX_320211", Some("xf320211")));
        let source = routes[1].to_source();
        assert_eq!(source.external.as_ref().unwrap().api_prefix, "$JS.xf320211.API");
        assert_eq!(source.external.unwrap().delivery_prefix.as_deref(), Some("xfu.320211"));
        // every message is tagged with the outbox it came from, whatever its subject says
        assert_eq!(routes[1].take, Take::Transform(vec![(">".into(), "xfr.320211.>".into())]));
        assert_eq!(routes[0].take, Take::Transform(vec![(">".into(), "xfr.320200.>".into())]));
        let only_own_name = |node: &str, senders: &[&str]| {
            Take::Transform(
                senders
                    .iter()
                    .map(|s| (format!("xfr.{s}.xf.{s}.out.{node}.>"), format!("xf.{s}.out.{node}.>")))
                    .collect(),
            )
        };
        assert_eq!(
            inbox(&hub),
            [Sourced {
                stream: ROUTES.into(),
                domain: None,
                take: only_own_name("320200", &["320211", "320213"]),
                delivery: None
            }]
        );

        let child = settings(
            "domain = \"d320211\"\nparent_urls = [\"nats-leaf://127.0.0.1:7422\"]",
            "320211",
            Some("320200"),
            &["320213", "320200"],
        );
        assert!(super::routes(&child).is_none());
        assert_eq!(
            inbox(&child),
            [Sourced {
                stream: ROUTES.into(),
                domain: Some("xf320200".into()),
                take: only_own_name("320211", &["320200", "320213"]),
                delivery: Some("xfd.320211".into())
            }]
        );
    }

    #[test]
    fn a_bad_domain_or_parent_url_is_refused_naming_the_key() {
        let base = |nats: &str| {
            Settings::from_toml(&format!(
                "[node]\ncode = \"320211\"\nname = \"n\"\nparent = \"320200\"\n[nats]\n{nats}\n[[divisions]]\ncode = \"320211\"\nname = \"n\"\n[[organs]]\nid = \"320211-xfj\"\nname = \"x\"\nrole = \"petition_bureau\"\nnode = \"320211\"\n"
            ))
        };
        assert!(base("domain = \"a.b\"").unwrap_err().to_string().contains("nats.domain"));
        assert!(base("parent_urls = [\"http://x\"]").unwrap_err().to_string().contains("nats.parent_urls[0]"));
    }
}
