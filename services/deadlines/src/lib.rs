//! xinfang deadlines (期限): one durable timer per open step of every case, kept in sled and
//! derived from the ledger; `deadline_warned` at the warning point, `deadline_breached` at the
//! due instant, `closed` when a petitioner's window runs out. Each firing has an id derived
//! from (case, step, due, kind), so a crash between appending and forgetting the timer cannot
//! put it in the ledger twice; timers that came due while the service was down fire at start.
//!
//! # Layout
//! - [`timers`]: the store's layout, the due index and the arm / fire operations.
//! - [`plan`]: what reconciling a case's timers with its events changes (pure).
//! - [`rebuild`]: a new or lost store rebuilt from the ledger in one sequential read.
//! - [`render`]: the wire form of warnings and breaches, written directly (the burst's path).
//! - [`metrics`].
#![forbid(unsafe_code)]

pub mod metrics;
pub mod plan;
pub mod rebuild;
pub mod render;
pub mod timers;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use xinfang_shared::config::Settings;
use xinfang_shared::consumer::{self, ConsumerMetrics, Spec};
use xinfang_shared::dues::Policy;
use xinfang_shared::ledger::Ledger;
use xinfang_shared::ops::{self, Readiness};
use xinfang_shared::{runtime, subjects, CancellationToken};

use crate::metrics::Metrics;
use crate::timers::Timers;

/// Ledger events that open, move or close a step (deadlines' own events are left out).
pub const TRIGGERS: &[&str] = &[
    "registered",
    "routed",
    "forwarded",
    "transferred_in",
    "accepted",
    "rejected",
    "jurisdiction_declined",
    "extended",
    "replied",
    "evaluated",
    "review_requested",
    "review_replied",
    "rereview_requested",
    "rereview_replied",
    "hearing_started",
    "hearing_ended",
    "closed",
    "terminated",
    "escalated",
    "directive_received",
    "appointment_booked",
    "reception_recorded",
];

/// How often due timers are looked for.
const TICK: Duration = Duration::from_millis(200);

/// How long before a due instant its timers are read into sled's cache ([`Timers::warm`]),
/// and how many at most (sled's cache is bounded; this stays well inside it).
const WARM_AHEAD: Duration = Duration::from_secs(2);
const WARM_MAX: usize = 200_000;

/// Every how many ticks the holiday calendar files are read again (about 5 s).
const CALENDAR_EVERY: u32 = 25;

/// Picks up holiday schedules added or changed under `calendar.path` without a restart
/// (DOMAIN.md: operators load next year's schedule each November). A file that does not parse
/// is refused, logged once, and the calendar in force stays.
#[derive(Default)]
struct CalendarWatch {
    refused: Option<String>,
    recompute_pending: bool,
}

impl CalendarWatch {
    async fn poll(&mut self, settings: &Settings, timers: &Timers, now: xinfang_shared::time::Instant) {
        let before = self.refused.clone();
        let Some(calendar) = runtime::read_calendar(settings, &mut self.refused) else {
            if self.refused != before {
                timers.metrics.calendar_reloads.with_label_values(&["refused"]).inc();
            }
            return;
        };
        if *timers.calendar() == calendar && !self.recompute_pending {
            return;
        }
        let years: Vec<i32> = calendar.years().collect();
        match timers.set_calendar(calendar, now).await {
            Ok(cases) => {
                self.recompute_pending = false;
                timers.metrics.calendar_reloads.with_label_values(&["applied"]).inc();
                tracing::info!(?years, cases, "calendar loaded; provisional dues recomputed");
            }
            Err(e) => {
                self.recompute_pending = true;
                tracing::warn!(error = %e, "recomputing provisional dues failed; will retry");
            }
        }
    }
}

/// How often overdue steps are counted.
const OVERDUE_EVERY: Duration = Duration::from_secs(5);

/// Keeps `xf_deadlines_overdue_steps` current: the store's armed steps are counted again every
/// [`OVERDUE_EVERY`], or ten times as long as the count took when the store is large.
async fn count_overdue(timers: Arc<Timers>, shutdown: CancellationToken) {
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let started = std::time::Instant::now();
        let t = timers.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || t.overdue(xinfang_shared::time::now_cst())).await else {
            return;
        };
        for (step, organ) in &seen {
            if !now.contains_key(&(step.clone(), organ.clone())) {
                timers.metrics.overdue.with_label_values(&[step, organ]).set(0);
            }
        }
        for ((step, organ), n) in &now {
            timers.metrics.overdue.with_label_values(&[step, organ]).set(*n);
        }
        seen.extend(now.into_keys());
        let pause = OVERDUE_EVERY.max(started.elapsed() * 10);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Runs deadlines until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), String> {
    let node = settings.node_code();
    let client = runtime::connect_nats(&settings, "deadlines").await?;
    let js = async_nats::jetstream::new(client.clone());
    let ledger =
        Ledger::open_replicated(js.clone(), node.clone(), settings.nats.replicas).await.map_err(|e| e.to_string())?;
    let registry = ops::registry("deadlines", node.as_str());
    let organs: Vec<String> =
        settings.organs.iter().filter(|o| o.node == node.as_str()).map(|o| o.id.to_string()).collect();
    let metrics = Metrics::register(&registry, &organs);
    let consumer_metrics = ConsumerMetrics::register(&registry, "deadlines");
    let (projection, emptied) = timers::open_store(&settings.store.path)
        .map_err(|e| format!("store.path {}: {e}", settings.store.path.display()))?;
    if emptied {
        tracing::info!("timer store of an older layout emptied; rebuilding it from the ledger");
    }
    let calendar = settings.calendar().map_err(|e| e.to_string())?;
    let timers = Arc::new(Timers::new(ledger.clone(), projection, calendar, Policy::from_settings(&settings), metrics));
    timers.load();
    let ready = Readiness::default();
    let (addr, ops_task) = ops::serve(&settings.metrics.listen, registry, ready.clone(), shutdown.clone()).await?;
    match rebuild::rebuild(&timers, TRIGGERS, &settings.store.path.with_extension("rebuild")).await {
        Ok(Some(r)) => tracing::info!(
            events = r.events,
            cases = r.cases,
            upto = r.upto,
            read_s = r.read_secs,
            replay_s = r.replay_secs,
            "timer store rebuilt from the ledger"
        ),
        Ok(None) => {}
        // the consumer replays the ledger event by event instead, counting from none
        Err(e) => {
            tracing::warn!(error = %e, "rebuilding the timer store in one read failed");
            if timers.projection.last_applied() == 0 {
                timers.clear_counts()?;
            }
        }
    }
    timers.export_counts();
    let overdue = tokio::spawn(count_overdue(timers.clone(), shutdown.clone()));
    let spec = Spec {
        stream: ledger.stream_name().to_string(),
        durable: "deadlines".into(),
        filter_subjects: TRIGGERS.iter().map(|t| subjects::case_type_filter(&node, t)).collect(),
        max_deliver: 20,
        resume_after: Some(timers.projection.last_applied()),
    };
    let firing = {
        let (timers, shutdown, settings) = (timers.clone(), shutdown.clone(), settings.clone());
        tokio::spawn(async move {
            let mut calendar = CalendarWatch::default();
            let mut ticks = 0u32;
            let mut warmed = None;
            loop {
                let now = xinfang_shared::time::now_cst();
                if let Err(e) = timers.fire_due(now).await {
                    tracing::warn!(error = %e, "firing timers failed; will retry");
                }
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(CALENDAR_EVERY) {
                    calendar.poll(&settings, &timers, now).await;
                }
                // wake at the next due instant when it comes before the next tick, with its
                // timers read ahead
                let next = timers.next_due();
                let until = next.and_then(|due| (due - xinfang_shared::time::now_cst()).to_std().ok());
                if let (Some(due), Some(until)) = (next, until) {
                    if until <= WARM_AHEAD && warmed != Some(due) {
                        warmed = Some(due);
                        let timers = timers.clone();
                        let _ = tokio::task::spawn_blocking(move || timers.warm(due, WARM_MAX)).await;
                    }
                }
                let pause = next
                    .and_then(|due| (due - xinfang_shared::time::now_cst()).to_std().ok())
                    .map_or(TICK, |until| until.min(TICK));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        })
    };
    ready.set(true);
    println!("{}", ops::ready_line("deadlines", &format!("http://{addr}")));
    tracing::info!(%node, %addr, "deadlines ready");
    let arming = timers.clone();
    consumer::run(js, spec, consumer_metrics, shutdown.clone(), move |d| {
        let timers = arming.clone();
        async move { timers.arm(d).await }
    })
    .await;
    ready.set(false);
    let _ = tokio::time::timeout(Duration::from_secs(3), firing).await;
    overdue.abort();
    let _ = timers.projection.flush().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ops_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    tracing::info!("deadlines stopped");
    Ok(())
}
