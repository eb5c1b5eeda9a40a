//! xinfang routing (转送/交办): every registered, declined, transferred-in or review-requested
//! case goes to the organ with jurisdiction by the node's rules — or to the node that has it —
//! with the rule and the reason on record. Event ids derive from their cause, so a crash and a
//! redelivery never route twice.
//!
//! # Layout
//! - [`handle`]: one ledger event → `routed` / `forwarded` (+ outbox transfer).
//! - [`rules`]: the node file in force, reloaded when it changes (a bad one is refused).
//! - [`metrics`].
#![forbid(unsafe_code)]

pub mod handle;
pub mod metrics;
pub mod rules;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use xinfang_shared::config::Settings;
use xinfang_shared::consumer::{self, ConsumerMetrics, Spec};
use xinfang_shared::ledger::Ledger;
use xinfang_shared::ops::{self, Readiness};
use xinfang_shared::{runtime, subjects, CancellationToken};

use crate::handle::Routing;
use crate::metrics::Metrics;
use crate::rules::Rules;

/// The ledger event types routing acts on.
pub const TRIGGERS: &[&str] =
    &["registered", "jurisdiction_declined", "transferred_in", "review_requested", "rereview_requested"];

/// Cases routed at once (each case's events in order): a decision waits on the ledger (the
/// append, sometimes a read), so overlapping them is what keeps routing at intake's pace.
pub const CASES_AT_ONCE: usize = 32;

/// Runs routing until `shutdown`. `config_path` is watched for rule changes.
pub async fn run(settings: Settings, config_path: Option<PathBuf>, shutdown: CancellationToken) -> Result<(), String> {
    let node = settings.node_code();
    let client = runtime::connect_nats(&settings, "routing").await?;
    let js = async_nats::jetstream::new(client.clone());
    let ledger =
        Ledger::open_replicated(js.clone(), node.clone(), settings.nats.replicas).await.map_err(|e| e.to_string())?;
    let registry = ops::registry("routing", node.as_str());
    let metrics = Metrics::register(&registry);
    let consumer_metrics = ConsumerMetrics::register(&registry, "routing");
    let ready = Readiness::default();
    let (addr, ops_task) = ops::serve(&settings.metrics.listen, registry, ready.clone(), shutdown.clone()).await?;
    let rules = Rules::new(settings, config_path, metrics.clone())?;
    let reload = tokio::spawn(rules.clone().watch(shutdown.clone()));
    let routing = Arc::new(Routing { ledger: ledger.clone(), rules, metrics });
    let spec = Spec {
        stream: ledger.stream_name().to_string(),
        durable: "routing".into(),
        filter_subjects: TRIGGERS.iter().map(|t| subjects::case_type_filter(&node, t)).collect(),
        max_deliver: 20,
        resume_after: None,
    };
    ready.set(true);
    println!("{}", ops::ready_line("routing", &format!("http://{addr}")));
    tracing::info!(%node, %addr, "routing ready");
    consumer::run_by_case(js, spec, consumer_metrics, shutdown.clone(), CASES_AT_ONCE, move |d| {
        let routing = routing.clone();
        async move { routing.handle(d).await }
    })
    .await;
    ready.set(false);
    let _ = tokio::time::timeout(Duration::from_secs(2), reload).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ops_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    tracing::info!("routing stopped");
    Ok(())
}
