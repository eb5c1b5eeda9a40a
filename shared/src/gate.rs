//! The door of every HTTP and NATS API (DESIGN.md §11), plumbing around [`crate::access`]:
//! the `Authorization` header becomes a [`Caller`] — `Bearer <token>`, or `Session <id>` for
//! the pages calling on a signed-in user's behalf — and callers without credentials (or with
//! bad ones) are rate limited per client address, so query codes cannot be walked and tokens
//! cannot be guessed.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::access::{Caller, Credentials};
use crate::config::Settings;
use crate::error::{ApiError, ErrorCode};
use crate::sessions::SessionKv;

/// Credentials and the public's rate limit of one service.
pub struct Gate {
    pub credentials: Credentials,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// The node's staff sessions, for `Authorization: Session <id>`.
    sessions: Option<SessionKv>,
}

/// How many client addresses the limiter remembers before it forgets the idle ones.
const REMEMBERED: usize = 10_000;

impl Gate {
    /// The gate of a node's `[auth]` section (already checked at load); `sessions`: the node's
    /// session store, when sessions are honoured.
    pub fn new(settings: &Settings, sessions: Option<SessionKv>) -> Result<Arc<Self>, String> {
        let credentials = settings.credentials().map_err(|e| e.to_string())?;
        let per_minute = NonZeroU32::new(settings.auth.public_per_minute).ok_or("auth.public_per_minute is 0")?;
        let burst = NonZeroU32::new(settings.auth.public_burst).ok_or("auth.public_burst is 0")?;
        let limiter = RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst));
        Ok(Arc::new(Self { credentials, limiter, sessions }))
    }

    /// The caller of an HTTP request from `client`: staff by a good credential; the public
    /// (and a bad credential, refused) only while the address is within its rate.
    pub async fn caller(&self, authorization: Option<&str>, client: Option<IpAddr>) -> Result<Caller, ApiError> {
        let caller = self.authenticate(authorization).await;
        if matches!(caller, Ok(Caller::Staff(_))) {
            return caller;
        }
        if let Some(ip) = client {
            if self.limiter.len() > REMEMBERED {
                self.limiter.retain_recent();
            }
            if self.limiter.check_key(&ip).is_err() {
                return Err(ApiError::general(
                    ErrorCode::RateLimited,
                    "too many requests from this address; please wait a minute",
                ));
            }
        }
        caller
    }

    /// The caller of a NATS request (node-local clients; no address to limit by).
    pub async fn nats_caller(&self, headers: Option<&async_nats::HeaderMap>) -> Result<Caller, ApiError> {
        let value = headers.and_then(|h| h.get("Authorization")).map(|v| v.as_str());
        self.authenticate(value).await
    }

    /// `Session <id>`: the signed-in user of a live session; anything else as
    /// [`Credentials::authenticate`] says.
    async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let Some(id) = authorization.and_then(|a| a.trim().strip_prefix("Session ")) else {
            return self.credentials.authenticate(authorization);
        };
        let expired = || crate::access::unauthorized("the session has ended; sign in again");
        let sessions = self.sessions.as_ref().ok_or_else(expired)?;
        let login = sessions
            .login_of(id.trim())
            .await
            .map_err(|e| ApiError::general(ErrorCode::Unavailable, format!("sessions cannot be read: {e}")))?
            .ok_or_else(expired)?;
        self.credentials.user(&login).map(|i| Caller::Staff(i.clone())).ok_or_else(expired)
    }
}

/// Axum middleware: puts the request's [`Caller`] into its extensions, or answers the refusal
/// (401 for a bad credential, 429 over the rate). The service must be served with
/// `into_make_service_with_connect_info::<SocketAddr>()` for the per-address limit.
pub async fn layer(State(gate): State<Arc<Gate>>, mut req: Request, next: Next) -> Response {
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    match gate.caller(authorization.as_deref(), client).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => refusal(&e),
    }
}

/// The JSON refusal of an [`ApiError`] with its HTTP status.
pub fn refusal(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, Json(e.to_body())).into_response();
    if e.code == ErrorCode::Unauthorized {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
}
