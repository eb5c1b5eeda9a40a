//! What every service exposes besides its API: `/metrics` (Prometheus text), `/healthz`
//! (the process answers) and `/readyz` (connected and consuming), plus build info.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// Whether the service is ready to take work.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the service ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// True when ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A registry with `xf_build_info{service,node,version} 1` already in it.
pub fn registry(service: &str, node: &str) -> Registry {
    let registry = Registry::new();
    let info =
        IntGaugeVec::new(Opts::new("xf_build_info", "Build and node of this service"), &["service", "node", "version"])
            .expect("valid metric");
    info.with_label_values(&[service, node, env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(info)).expect("first registration");
    registry
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(registry: Registry, ready: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut buf = Vec::new();
                    let encoder = TextEncoder::new();
                    match encoder.encode(&registry.gather(), &mut buf) {
                        Ok(()) => ([(header::CONTENT_TYPE, encoder.format_type().to_string())], buf).into_response(),
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"ok": true})) }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.get();
                async move {
                    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    (status, axum::Json(serde_json::json!({"ok": ready})))
                }
            }),
        )
}

/// The line a service prints on stdout when ready, read by `xinfang up`.
pub fn ready_line(service: &str, http: &str) -> String {
    serde_json::json!({"ready": true, "service": service, "http": http}).to_string()
}

/// Serves `/metrics`, `/healthz`, `/readyz` on `listen` (the `metrics.listen` of services
/// without an HTTP API) until `shutdown`; returns the bound address.
pub async fn serve(
    listen: &str,
    registry: Registry,
    ready: Readiness,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), String> {
    serve_with(listen, registry, ready, Router::new(), shutdown).await
}

/// [`serve`] with the service's own routes (`api`) beside the health and metrics ones.
pub async fn serve_with(
    listen: &str,
    registry: Registry,
    ready: Readiness,
    api: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = crate::runtime::bind(listen, "metrics.listen").await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = router(registry, ready).merge(api);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    });
    Ok((addr, task))
}
