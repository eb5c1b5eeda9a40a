//! HTTP: the JSON API under `/v1/escalations` (served with `/metrics`, `/healthz`, `/readyz`
//! on the service's address). Refusals are 4xx with `{"ok": false, "error": {code, field,
//! message}}`. The office's pages are the web service's (`services/web`), over the NATS API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use xinfang_shared::access::{self, Caller};
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::petition::parse_body;
use xinfang_shared::time::now_cst;

use crate::inbox::{Filter, Inbox, View};
use crate::request;

/// The API routes; they go through the gate (DESIGN.md §11): the office acts, the office and
/// auditors read.
pub fn router(inbox: Arc<Inbox>) -> Router {
    let api = Router::new()
        .route("/v1/escalations", get(list_json))
        .route("/v1/escalations/{id}", get(get_json))
        .route("/v1/escalations/{id}/ack", post(ack_json))
        .route("/v1/escalations/{id}/directive", post(directive_json))
        .layer(axum::middleware::from_fn_with_state(inbox.gate.clone(), xinfang_shared::gate::layer));
    api.with_state(inbox)
}

fn error(e: &ApiError) -> Response {
    xinfang_shared::gate::refusal(e)
}

/// A view for lists: without the case snapshot.
pub fn brief(v: &View) -> Value {
    let mut value = serde_json::to_value(v).expect("serializes");
    if let Some(o) = value.as_object_mut() {
        o.remove("snapshot");
    }
    value
}

fn filter_of(q: Result<Query<Filter>, QueryRejection>) -> Result<Filter, ApiError> {
    let Query(f) =
        q.map_err(|e| ApiError::general(ErrorCode::InvalidField, format!("bad query: {}", e.body_text())))?;
    f.check()?;
    Ok(f)
}

async fn list_json(
    State(inbox): State<Arc<Inbox>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<Filter>, QueryRejection>,
) -> Response {
    match access::may_read_escalations(&caller).and_then(|_| filter_of(q)) {
        Ok(f) => {
            let items: Vec<Value> = inbox.list(&f, now_cst()).iter().map(brief).collect();
            Json(json!({"ok": true, "escalations": items})).into_response()
        }
        Err(e) => error(&e),
    }
}

async fn get_json(
    State(inbox): State<Arc<Inbox>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match inbox.read_one(&caller, &id).await {
        Ok(v) => Json(json!({"ok": true, "escalation": v})).into_response(),
        Err(e) => error(&e),
    }
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(json!({}));
    }
    parse_body(body)
}

async fn ack_json(
    State(inbox): State<Arc<Inbox>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let result = async {
        access::may_direct(&caller)?;
        let v = json_body(&body)?;
        if !v.is_object() {
            return Err(ApiError::general(ErrorCode::InvalidJson, "the body must be a JSON object"));
        }
        inbox.acknowledge(&id, &request::by(&v)?).await
    }
    .await;
    match result {
        Ok(v) => Json(json!({"ok": true, "escalation": brief(&v)})).into_response(),
        Err(e) => error(&e),
    }
}

async fn directive_json(
    State(inbox): State<Arc<Inbox>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let result = async {
        access::may_direct(&caller)?;
        let v = json_body(&body)?;
        let req = request::directive(&v, &inbox.calendar.get(), now_cst())?;
        inbox.direct(&id, req).await
    }
    .await;
    match result {
        Ok((v, did)) => Json(json!({"ok": true, "directive_id": did, "escalation": brief(&v)})).into_response(),
        Err(e) => error(&e),
    }
}
