//! The streams that carry a node's cross-node traffic (DESIGN.md §6, §10), and how they are
//! provisioned. Which streams source what is decided from the node file alone ([`routes`],
//! [`inbox`], pure); [`provision`] makes the server match it.
//!
//! - One shared server (development, tests): `XF_INBOX_N` sources each peer's `XF_OUTBOX_M`,
//!   filtered to `xf.M.out.N.>`.
//! - A city of leaf links: a parent (a node with `nats.leaf_listen`) hosts `XF_ROUTES`, which
//!   sources its own outbox and each child's outbox across the child's JetStream domain; every
//!   node's inbox sources the `XF_ROUTES` it hangs under (its own, its parent's, or both)
//!   filtered to `xf.*.out.N.>`. Routes and inboxes capture no subjects, so no two streams of
//!   the account store the same message.

use async_nats::jetstream::stream::{self, External, Source};
use async_nats::jetstream::Context;

use crate::config::Settings;
use crate::ids::NodeCode;
use crate::ledger::{ensure_stream, ReadError, DUPLICATE_WINDOW};
use crate::subjects;

/// The hub's stream of every message between its nodes.
pub const ROUTES: &str = "XF_ROUTES";

/// One source of a stream: a stream, in this domain or another, and the subjects taken.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sourced {
    pub stream: String,
    /// `None`: the same server's domain.
    pub domain: Option<String>,
    pub filter: String,
}

impl Sourced {
    fn to_source(&self) -> Source {
        Source {
            name: self.stream.clone(),
            filter_subject: Some(self.filter.clone()),
            // set by hand: async-nats turns `domain` into `external` only when creating a stream
            external: self
                .domain
                .as_ref()
                .map(|d| External { api_prefix: format!("$JS.{d}.API"), delivery_prefix: None }),
            ..Default::default()
        }
    }
}

/// What `XF_ROUTES` sources on this node, if it hosts one: its own outbox and its children's.
pub fn routes(settings: &Settings) -> Option<Vec<Sourced>> {
    settings.nats.leaf_listen.as_ref()?;
    let node = settings.node_code();
    let own =
        Sourced { stream: subjects::outbox_stream(&node), domain: None, filter: subjects::outbox_subjects(&node) };
    let children = settings.children().into_iter().map(|child| Sourced {
        stream: subjects::outbox_stream(&child),
        domain: Some(settings.domain_of(&child)),
        filter: subjects::outbox_subjects(&child),
    });
    Some(std::iter::once(own).chain(children).collect())
}

/// What this node's `XF_INBOX` sources.
pub fn inbox(settings: &Settings) -> Vec<Sourced> {
    let node = settings.node_code();
    let mine = format!("xf.*.out.{node}.>");
    if !settings.linked() {
        return settings
            .inbox_sources()
            .into_iter()
            .filter(|peer| *peer != node)
            .map(|peer| Sourced {
                stream: subjects::outbox_stream(&peer),
                domain: None,
                filter: format!("xf.{peer}.out.{node}.>"),
            })
            .collect();
    }
    let mut sources = Vec::new();
    if settings.nats.leaf_listen.is_some() {
        sources.push(Sourced { stream: ROUTES.into(), domain: None, filter: mine.clone() });
    }
    if let (Some(parent), false) = (&settings.node.parent, settings.nats.parent_urls.is_empty()) {
        if let Ok(parent) = NodeCode::parse(parent) {
            sources.push(Sourced { stream: ROUTES.into(), domain: Some(settings.domain_of(&parent)), filter: mine });
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
        ensure_stream(js, sourcing(ROUTES.into(), description, &sources)).await?;
    }
    let description = format!("messages for node {node} from other nodes");
    ensure_stream(js, sourcing(subjects::inbox_stream(&node), description, &inbox(settings))).await?;
    Ok(())
}

/// A stream with no subjects of its own that takes `sources`.
fn sourcing(name: String, description: String, sources: &[Sourced]) -> stream::Config {
    let mut sources = sources.to_vec();
    sources.sort();
    sources.dedup_by(|a, b| a.stream == b.stream && a.domain == b.domain);
    stream::Config {
        name,
        description: Some(description),
        subjects: vec![],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        sources: Some(sources.iter().map(Sourced::to_source).collect()),
        allow_direct: true,
        ..Default::default()
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
        let got: Vec<_> = inbox(&s).into_iter().map(|x| (x.stream, x.domain, x.filter)).collect();
        assert_eq!(
            got,
            [
                ("XF_OUTBOX_320200".to_string(), None, "xf.320200.out.320211.>".to_string()),
                ("XF_OUTBOX_320213".to_string(), None, "xf.320213.out.320211.>".to_string()),
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
        assert_eq!(routes[1].to_source().external.unwrap().api_prefix, "$JS.xf320211.API");
        assert_eq!(inbox(&hub), [Sourced { stream: ROUTES.into(), domain: None, filter: "xf.*.out.320200.>".into() }]);

        let child = settings(
            "domain = \"d320211\"\nparent_urls = [\"nats-leaf://127.0.0.1:7422\"]",
            "320211",
            Some("320200"),
            &["320213", "320200"],
        );
        assert!(super::routes(&child).is_none());
        assert_eq!(
            inbox(&child),
            [Sourced { stream: ROUTES.into(), domain: Some("xf320200".into()), filter: "xf.*.out.320211.>".into() }]
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
