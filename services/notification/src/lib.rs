//! xinfang notification (通知): the notices the regulation requires — receipt with case id and
//! query code, 受理告知, 不予受理告知, 延期告知, 处理意见送达 to the petitioner; assignment,
//! reminder and 督办通知 to organs — rendered from the node's templates and delivered over a
//! signed webhook, an SMS gateway, SMTP or a file sink, each once: an outbox in sled, retries
//! with backoff and jitter, and `notified` / `notification_failed` in the ledger.
//!
//! # Layout
//! - [`outbox`]: planning (ledger event → notices) and delivery with retries.
//! - [`channels`]: webhook, SMS, e-mail, file.
//! - [`templates`]: minijinja, Chinese defaults, node overrides.
//! - [`metrics`].
#![forbid(unsafe_code)]

pub mod channels;
pub mod metrics;
pub mod outbox;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use xinfang_shared::calendar::LiveCalendar;
use xinfang_shared::config::Settings;
use xinfang_shared::consumer::{self, ConsumerMetrics, Spec};
use xinfang_shared::dues::Policy;
use xinfang_shared::ledger::{self, Ledger};
use xinfang_shared::ops::{self, Readiness};
use xinfang_shared::projection::Projection;
use xinfang_shared::{runtime, subjects, CancellationToken};

use crate::channels::Channels;
use crate::metrics::Metrics;
use crate::outbox::{duration, Outbox, Retry};
use crate::templates::Templates;

/// The ledger event types that call for notices.
pub const TRIGGERS: &[&str] = &[
    "registered",
    "routed",
    "accepted",
    "rejected",
    "extended",
    "replied",
    "review_replied",
    "rereview_replied",
    "escalated",
    "appointment_booked",
    "reception_recorded",
];

/// How often the outbox is looked at for notices due an attempt, when the last round was not
/// full.
const TICK: Duration = Duration::from_millis(200);

/// This process's share of the cases: with `notification.processes` = n, the process whose
/// `store.replica` is "" or "1" takes the first of n, "2" the second, and so on.
fn share_of(settings: &Settings) -> Result<(u32, u32), String> {
    let n = settings.notification.process_count();
    let replica = settings.store.replica.as_str();
    let k = match replica {
        "" => 1,
        r => r.parse::<u32>().ok().filter(|k| (1..=n).contains(k)).ok_or_else(|| {
            format!(
                "store.replica {r:?}: notification runs as {n} process(es) (notification.processes), named 1 to {n}"
            )
        })?,
    };
    Ok((k, n))
}

/// Runs notification until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), String> {
    let node = settings.node_code();
    let n = &settings.notification;
    let retry = Retry {
        initial: duration(n.retry_initial.as_deref(), Duration::from_secs(5), "notification.retry_initial")?,
        max: duration(n.retry_max.as_deref(), Duration::from_secs(600), "notification.retry_max")?,
        horizon: duration(n.horizon.as_deref(), Duration::from_secs(86_400), "notification.horizon")?,
    };
    let share = share_of(&settings)?;
    let templates = Templates::new(&n.templates)?;
    let channels = Channels::new(n, &settings.store.path)?;
    let client = runtime::connect_nats(&settings, "notification").await?;
    let js = async_nats::jetstream::new(client.clone());
    let ledger =
        Ledger::open_replicated(js.clone(), node.clone(), settings.nats.replicas).await.map_err(|e| e.to_string())?;
    let codes = ledger::query_code_bucket(&js, &node, settings.nats.replicas).await.map_err(|e| e.to_string())?;
    let registry = ops::registry("notification", node.as_str());
    let metrics = Metrics::register(&registry);
    let consumer_metrics = ConsumerMetrics::register(&registry, "notification");
    let store = Projection::open(&settings.store.path, "outbox")
        .map_err(|e| format!("store.path {}: {e}", settings.store.path.display()))?;
    let calendar = LiveCalendar::new(settings.calendar().map_err(|e| e.to_string())?);
    tokio::spawn(runtime::follow_calendar(settings.clone(), calendar.clone(), shutdown.clone()));
    let outbox = Arc::new(Outbox {
        ledger: ledger.clone(),
        store,
        codes,
        keys: runtime::node_secret(&settings)?,
        channels,
        templates,
        retry,
        metrics,
        policy: Policy::from_settings(&settings),
        calendar,
        settings: settings.clone(),
        started_ms: chrono::Utc::now().timestamp_millis(),
        checked: Default::default(),
        share,
    });
    outbox.refresh_gauges();
    let ready = Readiness::default();
    let (addr, ops_task) = ops::serve(&settings.metrics.listen, registry, ready.clone(), shutdown.clone()).await?;
    let delivering = {
        let (outbox, shutdown) = (outbox.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let attempted = outbox.deliver_due().await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "recording a delivery failed; will retry");
                    0
                });
                // a full round: the next at once (a burst of notices is not paced by the tick)
                if attempted == outbox::ROUND && !shutdown.is_cancelled() {
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(TICK) => {}
                }
            }
        })
    };
    let spec = Spec {
        stream: ledger.stream_name().to_string(),
        durable: settings.store.projection_durable("notification"),
        filter_subjects: TRIGGERS.iter().map(|t| subjects::case_type_filter(&node, t)).collect(),
        max_deliver: 20,
        resume_after: Some(outbox.store.last_applied()),
    };
    ready.set(true);
    println!("{}", ops::ready_line("notification", &format!("http://{addr}")));
    tracing::info!(%node, %addr, share = share.0, of = share.1, "notification ready");
    let planning = outbox.clone();
    consumer::run(js, spec, consumer_metrics, shutdown.clone(), move |d| {
        let outbox = planning.clone();
        async move { outbox.plan(d).await }
    })
    .await;
    ready.set(false);
    let _ = tokio::time::timeout(Duration::from_secs(5), delivering).await;
    let _ = outbox.store.flush().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ops_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    tracing::info!("notification stopped");
    Ok(())
}
