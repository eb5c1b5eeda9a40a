//! xinfang web (页面): the pages people work in, server-rendered, usable without JavaScript —
//! login (登录), registration (登记) for the bureau's clerks, an organ's inbox (待办) and case
//! page, the bureau's overview (本级), the city office's escalations (督办件), reception days
//! (领导接访日) and campaigns (攻坚化解), and the public status page (查询). It keeps no case data: every page calls intake's and
//! escalation's NATS endpoints on the signed-in user's behalf (`Authorization: Session <id>`),
//! so the scope of each role is decided where the data is, once (`shared::access`).
//!
//! # Layout
//! - [`auth`]: sessions (tower-sessions over JetStream KV), sign-in and out, the signed-in
//!   user, and the guard that refuses cross-site posts.
//! - [`calls`]: the NATS requests to intake and escalation.
//! - [`views`]: templates (minijinja) and the Chinese labels they use.
//! - [`staff`], [`office`], [`public`]: the pages of each audience; [`agenda`]: reception
//!   days (the public schedule and booking, the bureau's records) and campaigns.
#![forbid(unsafe_code)]

pub mod agenda;
pub mod auth;
pub mod calls;
pub mod office;
pub mod public;
pub mod staff;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use xinfang_shared::config::Settings;
use xinfang_shared::gate::Gate;
use xinfang_shared::ops::{self, Readiness};
use xinfang_shared::sessions::SessionKv;
use xinfang_shared::{runtime, CancellationToken};

/// What every page handler shares.
pub struct Web {
    pub settings: Settings,
    pub calls: calls::Calls,
    pub views: views::Views,
    /// Credentials of the node file, and the per-address limit of sign-ins and public lookups.
    pub gate: Arc<Gate>,
    pub sessions: SessionKv,
}

/// The pages' routes, with sessions and the cross-site guard.
pub fn router(web: Arc<Web>) -> Router {
    let session_layer = auth::session_layer(&web);
    Router::new()
        .route("/", get(auth::home))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", axum::routing::post(auth::logout))
        .merge(staff::routes())
        .merge(office::routes())
        .merge(public::routes())
        .merge(agenda::routes())
        .route("/static/style.css", get(views::stylesheet))
        .fallback(views::not_found)
        .layer(axum::middleware::from_fn(auth::same_origin))
        .layer(session_layer)
        .with_state(web)
}

/// Runs the pages until `shutdown` on `web.listen`; prints the ready line once they answer.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), String> {
    let node = settings.node_code();
    let client = runtime::connect_nats(&settings, "web").await?;
    let js = async_nats::jetstream::new(client.clone());
    let sessions = SessionKv::open(&js, node.as_str(), settings.nats.replicas, settings.web.session_max()).await?;
    let gate = Gate::new(&settings, Some(sessions.clone()))?;
    let views = views::Views::new(&settings)?;
    let registry = ops::registry("web", node.as_str());
    let listener = runtime::bind(&settings.web.listen, "web.listen").await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let web = Arc::new(Web { calls: calls::Calls::new(client.clone(), node.clone()), views, gate, sessions, settings });
    let ready = Readiness::default();
    let app = router(web).merge(ops::router(registry, ready.clone()));
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).with_graceful_shutdown(async move { http_shutdown.cancelled().await }).await
    });
    ready.set(true);
    println!("{}", ops::ready_line("web", &format!("http://{addr}")));
    tracing::info!(%node, %addr, "web ready");
    shutdown.cancelled().await;
    ready.set(false);
    if tokio::time::timeout(Duration::from_secs(5), server).await.is_err() {
        tracing::warn!("page requests did not finish within 5 s");
    }
    tracing::info!("web stopped");
    Ok(())
}
