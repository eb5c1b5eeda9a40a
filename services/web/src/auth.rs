//! Who is signed in (DESIGN.md §11): sessions kept by tower-sessions in JetStream KV
//! (`shared::sessions`), a cookie that is `HttpOnly` and `SameSite=Strict` (`__Host-` and
//! `Secure` over TLS), the session id rotated at sign-in, an idle timeout (the record's expiry,
//! renewed by use) and an absolute one (from sign-in). Posts from another site are refused
//! before any handler runs ([`same_origin`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use xinfang_shared::access::{Identity, Role};
use xinfang_shared::sessions::{self, SessionKv, LOGIN, SINCE};

use crate::views::{self, page};
use crate::Web;

/// The session layer of the pages.
pub fn session_layer(web: &Web) -> SessionManagerLayer<SessionKv> {
    let w = &web.settings.web;
    let idle = time::Duration::seconds(w.session_idle().as_secs() as i64);
    SessionManagerLayer::new(web.sessions.clone())
        .with_name(sessions::cookie_name(w.tls))
        .with_secure(w.tls)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(idle))
}

/// A signed-in user: the identity from the node file and the session to act under.
pub struct Staff {
    pub identity: Identity,
    pub session_id: String,
}

impl Staff {
    pub fn has(&self, role: Role) -> bool {
        self.identity.has(role)
    }
}

/// What a page answers when nobody (or a user no longer in the node file) is signed in: the
/// sign-in page, coming back here afterwards.
pub struct SignIn(String);

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        let next: String = form_urlencoded::byte_serialize(self.0.as_bytes()).collect();
        Redirect::to(&format!("/login?next={next}")).into_response()
    }
}

impl FromRequestParts<Arc<Web>> for Staff {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, Self::Rejection> {
        let here = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let back = if parts.method == Method::GET { here } else { "/".into() };
        let session = Session::from_request_parts(parts, web).await.map_err(|_| SignIn(back.clone()))?;
        let login: Option<String> = session.get(LOGIN).await.ok().flatten();
        let since: Option<i64> = session.get(SINCE).await.ok().flatten();
        let (Some(login), Some(since), Some(id)) = (login, since, session.id()) else {
            return Err(SignIn(back));
        };
        if !sessions::within_lifetime(since, web.settings.web.session_max(), time::OffsetDateTime::now_utc()) {
            let _ = session.flush().await;
            return Err(SignIn(back));
        }
        let Some(identity) = web.gate.credentials.user(&login).cloned() else {
            let _ = session.flush().await;
            return Err(SignIn(back));
        };
        Ok(Staff { identity, session_id: id.to_string() })
    }
}

/// `GET /`: each role's first page; the sign-in page for nobody.
pub async fn home(staff: Option<Staff>) -> Redirect {
    match staff {
        None => Redirect::to("/login"),
        Some(s) if s.has(Role::Organ) => Redirect::to("/inbox"),
        Some(s) if s.has(Role::Bureau) || s.has(Role::Auditor) => Redirect::to("/overview"),
        Some(s) if s.has(Role::Office) => Redirect::to("/escalations"),
        Some(_) => Redirect::to("/query"),
    }
}

impl axum::extract::OptionalFromRequestParts<Arc<Web>> for Staff {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Option<Self>, Self::Rejection> {
        Ok(<Staff as FromRequestParts<Arc<Web>>>::from_request_parts(parts, web).await.ok())
    }
}

#[derive(Deserialize, Default)]
pub struct NextPath {
    #[serde(default)]
    next: Option<String>,
}

/// Only a path of this site is a place to go back to after sign-in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".into(),
    }
}

/// `GET /login`.
pub async fn login_page(State(web): State<Arc<Web>>, Query(q): Query<NextPath>) -> Response {
    let ctx = minijinja::context! { next => safe_next(q.next.as_deref()), login => "" };
    page(&web, StatusCode::OK, "login.html", None, ctx)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: argon2id against the node file; the session id is rotated, so an id
/// planted before sign-in is worth nothing after. Sign-ins are rate limited per address.
pub async fn login(
    State(web): State<Arc<Web>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    if let Err(e) = web.gate.caller(None, Some(client.ip())).await {
        return views::refused(&web, None, &e);
    }
    let credentials = web.gate.credentials.clone();
    let (login, password) = (form.login.trim().to_string(), form.password);
    // argon2 is deliberately slow: off the async workers
    let identity =
        tokio::task::spawn_blocking(move || credentials.login(&login, &password).cloned()).await.ok().flatten();
    let Some(identity) = identity else {
        tracing::info!(client = %client.ip(), "sign-in refused");
        let ctx = minijinja::context! { next, login => form.login.trim(), error => "用户名或密码不正确" };
        return page(&web, StatusCode::UNAUTHORIZED, "login.html", None, ctx);
    };
    let started = async {
        session.cycle_id().await?;
        session.insert(LOGIN, &identity.name).await?;
        session.insert(SINCE, time::OffsetDateTime::now_utc().unix_timestamp()).await
    };
    if let Err(e) = started.await {
        tracing::warn!(error = %e, "could not start a session");
        return views::refused(&web, None, &crate::calls::unavailable());
    }
    tracing::info!(user = %identity.name, "signed in");
    Redirect::to(&next).into_response()
}

/// `POST /logout`: the session ends at once, here and for the APIs.
pub async fn logout(session: Session) -> Redirect {
    if let Some(id) = session.id() {
        tracing::info!(session = %&id.to_string()[..6], "signed out");
    }
    let _ = session.flush().await;
    Redirect::to("/login")
}

/// Refuses a state-changing request another site made the browser send: `Sec-Fetch-Site`
/// must be `same-origin` (or `none`: typed or bookmarked), else the `Origin` must be this
/// host. Requests with neither header are not from a browser that would carry our cookie
/// cross-site (and the cookie is `SameSite=Strict` besides).
pub async fn same_origin(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let allowed = match (text("sec-fetch-site"), text(header::ORIGIN.as_str())) {
        (Some(site), _) => site == "same-origin" || site == "none",
        (None, Some(origin)) => {
            let host = text(header::HOST.as_str()).unwrap_or_default();
            origin.split_once("://").map(|(_, h)| h) == Some(host.as_str())
        }
        (None, None) => true,
    };
    if allowed {
        next.run(req).await
    } else {
        tracing::warn!(path = %req.uri().path(), "cross-site post refused");
        (StatusCode::FORBIDDEN, [(header::CACHE_CONTROL, "no-store")], axum::response::Html(views::CROSS_SITE))
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/inbox?late=true")), "/inbox?late=true");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
