//! HTTP: the JSON API under `/v1/escalations` and the office's pages under `/escalations`
//! (served with `/metrics`, `/healthz`, `/readyz` on the service's address). Refusals are
//! 4xx with `{"ok": false, "error": {code, field, message}}`, or a page saying what was wrong.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde_json::{json, Value};
use xinfang_shared::access::{self, Caller};
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::petition::parse_body;
use xinfang_shared::time::now_cst;

use crate::inbox::{Filter, Inbox, View};
use crate::{page, request};

/// The API and page routes.
/// The API routes go through the gate (DESIGN.md §11): the office acts, the office and
/// auditors read.
pub fn router(inbox: Arc<Inbox>) -> Router {
    let api = Router::new()
        .route("/v1/escalations", get(list_json))
        .route("/v1/escalations/{id}", get(get_json))
        .route("/v1/escalations/{id}/ack", post(ack_json))
        .route("/v1/escalations/{id}/directive", post(directive_json))
        .layer(axum::middleware::from_fn_with_state(inbox.gate.clone(), xinfang_shared::gate::layer));
    Router::new()
        .merge(api)
        .route("/", get(|| async { Redirect::to("/escalations") }))
        .route("/escalations", get(list_page))
        .route("/escalations/{id}", get(detail_page))
        .route("/escalations/{id}/ack", post(ack_form))
        .route("/escalations/{id}/directive", post(directive_form))
        .with_state(inbox)
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
    match access::may_read_escalations(&caller).and_then(|()| filter_of(q)) {
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
    if let Err(e) = access::may_read_escalations(&caller) {
        return error(&e);
    }
    match inbox.get(&id) {
        Some(v) => Json(json!({"ok": true, "escalation": v})).into_response(),
        None => error(&ApiError::field(ErrorCode::NotFound, "id", format!("本节点收件箱中没有督办件 {id}"))),
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

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

fn refused(e: &ApiError, back: &str) -> Response {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let what = match &e.field {
        Some(f) => format!("{}（{f}）", e.message),
        None => e.message.clone(),
    };
    html(status, page::refusal(&what, back))
}

async fn list_page(State(inbox): State<Arc<Inbox>>, q: Result<Query<Filter>, QueryRejection>) -> Response {
    match filter_of(q) {
        Ok(mut f) => {
            if f.state.as_deref().is_none_or(str::is_empty) {
                f.state = Some("pending".into());
            }
            let now = now_cst();
            html(StatusCode::OK, page::list(inbox.ledger.node().as_str(), &inbox.list(&f, now), &f, now))
        }
        Err(e) => refused(&e, "/escalations"),
    }
}

async fn detail_page(State(inbox): State<Arc<Inbox>>, Path(id): Path<String>) -> Response {
    match inbox.get(&id) {
        Some(v) => html(StatusCode::OK, page::detail(&v, now_cst(), None)),
        None => refused(
            &ApiError::field(ErrorCode::NotFound, "id", format!("本节点收件箱中没有督办件 {id}")),
            "/escalations",
        ),
    }
}

fn form_value(form: Result<Form<HashMap<String, String>>, FormRejection>) -> Result<Value, ApiError> {
    let Form(map) =
        form.map_err(|e| ApiError::general(ErrorCode::InvalidField, format!("bad form: {}", e.body_text())))?;
    Ok(Value::Object(map.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
}

async fn ack_form(
    State(inbox): State<Arc<Inbox>>,
    Path(id): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let back = format!("/escalations/{id}");
    let result = async { inbox.acknowledge(&id, &request::by(&form_value(form)?)?).await }.await;
    match result {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(e) => refused(&e, &back),
    }
}

async fn directive_form(
    State(inbox): State<Arc<Inbox>>,
    Path(id): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let back = format!("/escalations/{id}");
    let result = async {
        let v = form_value(form)?;
        inbox.direct(&id, request::directive(&v, &inbox.calendar.get(), now_cst())?).await
    }
    .await;
    match result {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(e) => refused(&e, &back),
    }
}
