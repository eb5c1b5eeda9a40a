//! xinfang intake (信访登记): the only door in. Petitions over HTTP and NATS are validated,
//! get a case id and a query code, and are appended to the node's ledger before the receipt
//! is sent; organ and petitioner actions are checked against the case's state and appended
//! with optimistic concurrency.
//!
//! # Layout
//! - [`register`]: submission → `registered` → receipt, idempotency keys.
//! - [`case_ids`]: restart-proof per-day case id sequence.
//! - [`cases`]: staff view, public status view, actions.
//! - [`worklist`]: the open cases by organ and the node's counts (待办, 本级), from the ledger.
//! - [`receptions`], [`campaigns`]: leaders' reception days and bookings (约访), campaigns
//!   (攻坚化解) kept in the agenda stream; [`figures`]: their figures as metrics.
//! - [`http`] and [`service`]: the two transports over the same operations; [`open311`]: the
//!   GeoReport v2 endpoint for hotline platforms and 311 clients.
#![forbid(unsafe_code)]

pub mod campaigns;
pub mod case_ids;
pub mod cases;
pub mod figures;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod open311;
pub mod receptions;
pub mod register;
pub mod repeats;
pub mod service;
pub mod worklist;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use serde_json::Value;
use xinfang_shared::access::Caller;
use xinfang_shared::calendar::LiveCalendar;
use xinfang_shared::config::Settings;
use xinfang_shared::consumer::{self, ConsumerMetrics, Spec};
use xinfang_shared::dues::Policy;
use xinfang_shared::error::ApiError;
use xinfang_shared::ledger::Ledger;
use xinfang_shared::links::Links;
use xinfang_shared::ops::{self, Readiness};
use xinfang_shared::sessions::SessionKv;
use xinfang_shared::state::Windows;
use xinfang_shared::time::{Clock, SystemClock};
use xinfang_shared::transfer;
use xinfang_shared::{links, runtime, subjects, CancellationToken};

use crate::case_ids::CaseIds;
use crate::metrics::Metrics;
use crate::register::Submitted;

/// The intake service's state, shared by both transports.
pub struct Intake {
    pub settings: Settings,
    pub ledger: Ledger,
    pub case_ids: CaseIds,
    pub idempotency: kv::Store,
    pub calendar: LiveCalendar,
    pub policy: Policy,
    pub windows: Windows,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// Which cases each petitioner has (repeat detection), rebuilt from the ledger.
    pub repeats: xinfang_shared::projection::Projection,
    /// The open cases and the node's counts (pages' inbox and overview), from the ledger.
    pub worklist: xinfang_shared::projection::Projection,
    /// The node secret: query codes and ID numbers are kept as keyed hashes under it.
    pub keys: xinfang_shared::keyring::KeyRing,
    /// Salt of the unkeyed petitioner keys of cases registered before keyed hashes, still
    /// matched for repeats.
    pub petitioner_key_salt: String,
    /// Credentials and the public's rate limit (DESIGN.md §11).
    pub gate: Arc<xinfang_shared::gate::Gate>,
    /// Who read which petitioner's personal data.
    pub audit: xinfang_shared::audit::Audit,
    /// Reception days, their bookings, and campaigns.
    pub agenda: xinfang_shared::agenda::Agenda,
    /// Told when the agenda changed, so the figures are recomputed soon ([`figures::run`]).
    pub figures_due: Arc<tokio::sync::Notify>,
}

impl Intake {
    /// Connects the parts: ledger streams, case id and idempotency buckets.
    pub async fn build(
        settings: Settings,
        js: async_nats::jetstream::Context,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let node = settings.node_code();
        let ledger = Ledger::open_replicated(js.clone(), node.clone(), settings.nats.replicas)
            .await
            .map_err(|e| e.to_string())?;
        let case_ids = CaseIds::open(&js, node.clone(), settings.nats.replicas).await?;
        let idempotency =
            register::idempotency_bucket(&js, node.as_str(), settings.intake.idempotency_hours, settings.nats.replicas)
                .await?;
        let calendar = LiveCalendar::new(settings.calendar().map_err(|e| e.to_string())?);
        let policy = Policy::from_settings(&settings);
        let windows = Windows { review: policy.review_window, rereview: policy.rereview_window };
        let repeats = xinfang_shared::projection::Projection::open(&settings.store.path, "repeats")
            .map_err(|e| format!("store.path {}: {e}", settings.store.path.display()))?;
        let worklist =
            xinfang_shared::projection::Projection::in_db(repeats.db(), worklist::TREE).map_err(|e| e.to_string())?;
        for old in worklist::OLD_TREES {
            // an older layout is rebuilt from the ledger into the new tree (its consumer
            // resumes after the new tree's last applied event: none)
            repeats.db().drop_tree(old).map_err(|e| e.to_string())?;
        }
        let sessions = SessionKv::open(&js, node.as_str(), settings.nats.replicas, settings.web.session_max()).await?;
        let gate = xinfang_shared::gate::Gate::new(&settings, Some(sessions))?;
        let keys = runtime::node_secret(&settings)?;
        let audit = xinfang_shared::audit::Audit::open(&js, &node, settings.nats.replicas).await?;
        let agenda = xinfang_shared::agenda::Agenda::open(js.clone(), node.clone(), settings.nats.replicas)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            agenda,
            figures_due: Arc::new(tokio::sync::Notify::new()),
            gate,
            audit,
            keys,
            petitioner_key_salt: format!("xf-petitioner:{}", settings.node.parent.as_deref().unwrap_or(node.as_str())),
            settings,
            ledger,
            case_ids,
            idempotency,
            calendar,
            policy,
            windows,
            repeats,
            worklist,
            clock,
            metrics,
        })
    }

    /// [`Intake::submit`], counted by channel and outcome.
    pub async fn submit_counted(&self, caller: &Caller, body: &[u8]) -> Result<Submitted, ApiError> {
        let result = self.submit(caller, body).await;
        let (channel, outcome) = match &result {
            Ok(s) => (s.channel.as_str(), if s.replayed { "replayed" } else { "registered" }),
            Err(e) if e.code == xinfang_shared::error::ErrorCode::Unavailable => ("unknown", "unavailable"),
            Err(_) => ("unknown", "refused"),
        };
        self.metrics.petitions.with_label_values(&[channel, outcome]).inc();
        result
    }

    /// [`Intake::act`], counted by action and outcome.
    pub async fn act_counted(&self, caller: &Caller, case_id: &str, body: &Value) -> Result<Value, ApiError> {
        let result = self.act(caller, case_id, body).await;
        let action = body
            .get("action")
            .and_then(Value::as_str)
            .filter(|a| xinfang_shared::state::Action::NAMES.contains(a))
            .unwrap_or("unknown");
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.metrics.actions.with_label_values(&[action, outcome]).inc();
        result
    }
}

/// Cases whose transfers the inbox consumer handles at once ([`consumer::run_by_case`]).
const INBOX_CASES_AT_ONCE: usize = 32;

/// Runs intake until `shutdown`: HTTP API and ops endpoints on `http.listen`, NATS endpoints.
/// Prints the ready line on stdout once both take requests.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), String> {
    let node = settings.node_code();
    let client = runtime::connect_nats(&settings, "intake").await?;
    let js = async_nats::jetstream::new(client.clone());
    let registry = ops::registry("intake", node.as_str());
    let metrics = Metrics::register(&registry);
    let inbox_metrics = ConsumerMetrics::register(&registry, "intake_inbox");
    let repeats_metrics = ConsumerMetrics::register(&registry, "intake_repeats");
    let worklist_metrics = ConsumerMetrics::register(&registry, "intake_worklist");
    let listener = runtime::bind(&settings.http.listen, "http.listen").await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let intake = Arc::new(Intake::build(settings, js, Arc::new(SystemClock), metrics).await?);
    let links = Links::new(client.clone(), intake.settings.clone(), &registry, "intake");
    tokio::spawn(links.clone().watch(shutdown.clone()));
    let ready = Readiness::default();
    let app = http::router(intake.clone())
        .merge(http::links_router(links))
        .merge(open311::router(intake.clone())?)
        .merge(ops::router(registry, ready.clone()))
        .fallback(http::fallback);
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).with_graceful_shutdown(async move { http_shutdown.cancelled().await }).await
    });
    let (registered, endpoints_up) = tokio::sync::oneshot::channel();
    let nats = tokio::spawn(service::serve(client.clone(), intake.clone(), shutdown.clone(), registered));
    tokio::spawn(runtime::follow_calendar(intake.settings.clone(), intake.calendar.clone(), shutdown.clone()));
    tokio::spawn(figures::run(intake.clone(), shutdown.clone()));
    let repeats = {
        let spec = Spec {
            stream: intake.ledger.stream_name().to_string(),
            durable: intake.settings.store.projection_durable("intake-repeats"),
            filter_subjects: repeats::TYPES.iter().map(|t| subjects::case_type_filter(&node, t)).collect(),
            max_deliver: 20,
            resume_after: Some(intake.repeats.last_applied()),
        };
        let projection = intake.repeats.clone();
        let js = intake.ledger.jetstream().clone();
        tokio::spawn(consumer::run(js, spec, repeats_metrics, shutdown.clone(), move |d| {
            let projection = projection.clone();
            async move { repeats::apply(&projection, d).await }
        }))
    };
    let worklist = {
        let spec = Spec {
            stream: intake.ledger.stream_name().to_string(),
            durable: intake.settings.store.projection_durable("intake-worklist"),
            filter_subjects: xinfang_shared::worklist::TYPES
                .iter()
                .map(|t| subjects::case_type_filter(&node, t))
                .collect(),
            max_deliver: 20,
            resume_after: Some(intake.worklist.last_applied()),
        };
        let projection = intake.worklist.clone();
        let js = intake.ledger.jetstream().clone();
        tokio::spawn(consumer::run(js, spec, worklist_metrics, shutdown.clone(), move |d| {
            let projection = projection.clone();
            async move { worklist::apply(&projection, d).await }
        }))
    };
    let inbox = {
        let js = intake.ledger.jetstream().clone();
        links::provision(&js, &intake.settings).await.map_err(|e| e.to_string())?;
        let spec = Spec {
            stream: subjects::inbox_stream(&node),
            durable: "intake-inbox".into(),
            filter_subjects: vec![format!("xf.*.out.{node}.{}", transfer::KIND)],
            max_deliver: 20,
            resume_after: None,
        };
        let ledger = intake.ledger.clone();
        // no projection behind it: transfers are taken 32 cases at a time, each case's in order
        tokio::spawn(consumer::run_by_case(js, spec, inbox_metrics, shutdown.clone(), INBOX_CASES_AT_ONCE, move |d| {
            let ledger = ledger.clone();
            async move { inbox::receive(&ledger, d).await }
        }))
    };
    // ready only once a request over NATS finds its endpoint
    if endpoints_up.await.is_err() {
        return Err("the NATS endpoints did not start".into());
    }
    ready.set(true);
    println!("{}", ops::ready_line("intake", &format!("http://{addr}")));
    tracing::info!(%node, %addr, "intake ready");
    shutdown.cancelled().await;
    ready.set(false);
    // each step bounded: under a process-group signal nats-server may already be gone
    let step = |secs| Duration::from_secs(secs);
    if tokio::time::timeout(step(3), nats).await.is_err() {
        tracing::warn!("NATS endpoints did not stop within 3 s");
    }
    if tokio::time::timeout(step(5), server).await.is_err() {
        tracing::warn!("HTTP requests did not finish within 5 s");
    }
    let _ = tokio::time::timeout(step(2), inbox).await;
    let _ = tokio::time::timeout(step(2), repeats).await;
    let _ = tokio::time::timeout(step(2), worklist).await;
    if let Err(e) = intake.repeats.flush().await {
        tracing::warn!(error = %e, "could not flush the repeats projection; it will catch up from the ledger");
    }
    let _ = tokio::time::timeout(step(1), client.flush()).await;
    tracing::info!("intake stopped");
    Ok(())
}
