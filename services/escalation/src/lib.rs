//! xinfang escalation (督办): the supervision ladder and the parent node's inbox.
//!
//! On every node it turns warnings and breaches into rungs — `reminder` to the organ,
//! `supervision` by the petition bureau with its own due, `parent` for what the node cannot
//! settle (overdue supervision or directive, late routing, urgent and group cases, disputes
//! between nodes) — each recorded once as `escalated`, the `parent` ones also sent through the
//! outbox with a case snapshot. On a parent node it keeps the inbox of its children's
//! escalations (HTTP and NATS API for the joint-meeting office 联席会议办公室, whose pages the web service renders) and
//! sends acknowledgements and directives (督办单) back down, where they are recorded as
//! `escalation_acknowledged` and `directive_received` (whose due the deadlines service arms).
//!
//! # Layout
//! - [`ladder`]: case events → rungs (the rules are pure, in `xinfang_shared::escalation`).
//! - [`inbox`]: the cross-node messages at both ends, in sled.
//! - [`http`], [`service`], [`request`]: the office's API.
//! - [`metrics`].
#![forbid(unsafe_code)]

pub mod http;
pub mod inbox;
pub mod ladder;
pub mod metrics;
pub mod request;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use xinfang_shared::calendar::LiveCalendar;
use xinfang_shared::config::Settings;
use xinfang_shared::consumer::{self, ConsumerMetrics, Spec};
use xinfang_shared::escalation::{self as esc, Ladder};
use xinfang_shared::ledger::Ledger;
use xinfang_shared::ops::{self, Readiness};
use xinfang_shared::projection::Projection;
use xinfang_shared::sessions::SessionKv;
use xinfang_shared::time::now_cst;
use xinfang_shared::{links, runtime, subjects, CancellationToken};

use crate::inbox::Inbox;
use crate::ladder::Climb;
use crate::metrics::Metrics;

/// How often the open-escalation gauges are recounted. Not on every message: a recount lists
/// the whole inbox, and a city office's inbox of thousands recounted per arrival starved the
/// node (found by the fault campaign).
const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// Cases the ladder's consumer handles at once ([`consumer::run_by_case`]).
const CASES_AT_ONCE: usize = 32;

/// Runs escalation until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), String> {
    let node = settings.node_code();
    let client = runtime::connect_nats(&settings, "escalation").await?;
    let js = async_nats::jetstream::new(client.clone());
    let ledger =
        Ledger::open_replicated(js.clone(), node.clone(), settings.nats.replicas).await.map_err(|e| e.to_string())?;
    links::provision(&js, &settings).await.map_err(|e| e.to_string())?;
    let registry = ops::registry("escalation", node.as_str());
    let metrics = Metrics::register(&registry);
    let calendar = LiveCalendar::new(settings.calendar().map_err(|e| e.to_string())?);
    tokio::spawn(runtime::follow_calendar(settings.clone(), calendar.clone(), shutdown.clone()));
    let inbox_tree = Projection::open(&settings.store.path, "inbox")
        .map_err(|e| format!("store.path {}: {e}", settings.store.path.display()))?;
    let answers_tree = Projection::in_db(inbox_tree.db(), "answers").map_err(|e| e.to_string())?;
    let sessions = SessionKv::open(&js, node.as_str(), settings.nats.replicas, settings.web.session_max()).await?;
    let inbox = Arc::new(Inbox {
        ledger: ledger.clone(),
        inbox: inbox_tree,
        answers: answers_tree,
        calendar: calendar.clone(),
        metrics: metrics.clone(),
        gate: xinfang_shared::gate::Gate::new(&settings, Some(sessions))?,
        audit: xinfang_shared::audit::Audit::open(&js, &node, settings.nats.replicas).await?,
    });
    inbox.refresh_gauges(now_cst());
    let climb = Arc::new(Climb { ledger: ledger.clone(), ladder: Ladder::from_settings(&settings), calendar, metrics });

    let ready = Readiness::default();
    let (addr, ops_task) = ops::serve_with(
        &settings.metrics.listen,
        registry.clone(),
        ready.clone(),
        http::router(inbox.clone()),
        shutdown.clone(),
    )
    .await?;
    let (registered, endpoints_up) = tokio::sync::oneshot::channel();
    let nats_api = tokio::spawn(service::serve(client.clone(), inbox.clone(), shutdown.clone(), registered));

    // Ready means the office's inbox is whole: after a crash, what sled had not flushed is
    // re-applied from the streams before the service says so.
    let (inbox_whole, mut inbox_seen) = watch::channel(false);
    let (answers_whole, mut answers_seen) = watch::channel(false);
    let received = {
        let spec = Spec {
            stream: subjects::inbox_stream(&node),
            durable: "escalation-inbox".into(),
            filter_subjects: [esc::ESCALATION, esc::ACK, esc::DIRECTIVE]
                .iter()
                .map(|k| format!("xf.*.out.{node}.{k}"))
                .collect(),
            max_deliver: 20,
            resume_after: Some(inbox.inbox.last_applied()),
        };
        let inbox = inbox.clone();
        let m = ConsumerMetrics::register(&registry, "escalation_inbox");
        tokio::spawn(consumer::run_reporting(js.clone(), spec, m, shutdown.clone(), inbox_whole, move |d| {
            let inbox = inbox.clone();
            async move { inbox.receive(d).await }
        }))
    };
    let answered = {
        let spec = Spec {
            stream: subjects::outbox_stream(&node),
            durable: "escalation-answers".into(),
            filter_subjects: [esc::ACK, esc::DIRECTIVE].iter().map(|k| format!("xf.{node}.out.*.{k}")).collect(),
            max_deliver: 20,
            resume_after: Some(inbox.answers.last_applied()),
        };
        let inbox = inbox.clone();
        let m = ConsumerMetrics::register(&registry, "escalation_answers");
        tokio::spawn(consumer::run_reporting(js.clone(), spec, m, shutdown.clone(), answers_whole, move |d| {
            let inbox = inbox.clone();
            async move { inbox.record_answer(d).await }
        }))
    };
    let gauges = {
        let (inbox, shutdown) = (inbox.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(GAUGE_REFRESH) => inbox.refresh_gauges(now_cst()),
                }
            }
        })
    };

    for seen in [&mut inbox_seen, &mut answers_seen] {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = seen.wait_for(|whole| *whole) => {}
        }
    }
    // ready only once a request over NATS finds its endpoint
    if endpoints_up.await.is_err() {
        return Err("the NATS endpoints did not start".into());
    }
    ready.set(true);
    println!("{}", ops::ready_line("escalation", &format!("http://{addr}")));
    tracing::info!(%node, %addr, "escalation ready");
    let spec = Spec {
        stream: ledger.stream_name().to_string(),
        durable: "escalation".into(),
        filter_subjects: ladder::TRIGGERS.iter().map(|t| subjects::case_type_filter(&node, t)).collect(),
        max_deliver: 20,
        resume_after: None,
    };
    let m = ConsumerMetrics::register(&registry, "escalation");
    // the ladder feeds no projection: 32 cases are handled at a time, each case's events in
    // order, as routing's are
    consumer::run_by_case(js, spec, m, shutdown.clone(), CASES_AT_ONCE, move |d| {
        let climb = climb.clone();
        async move { climb.handle(d).await }
    })
    .await;
    ready.set(false);
    for task in [received, answered, gauges] {
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), nats_api).await;
    let _ = inbox.inbox.flush().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ops_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    tracing::info!("escalation stopped");
    Ok(())
}
