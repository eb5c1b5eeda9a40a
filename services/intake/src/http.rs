//! The HTTP API (DESIGN.md §5): the same operations as the NATS endpoints, errors mapped to
//! 400 / 401 / 404 / 409 / 413 / 503 with `{"ok": false, "error": {…}}` bodies.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::Value;
use xinfang_shared::access::Caller;
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::links::Links;
use xinfang_shared::petition::MAX_BODY_BYTES;

use crate::register::Submitted;
use crate::Intake;

/// The API routes (without `/metrics`, `/healthz`, `/readyz`, which the caller merges in).
/// Every route goes through the gate (credentials, the public's rate limit).
pub fn router(intake: Arc<Intake>) -> Router {
    let gate = intake.gate.clone();
    Router::new()
        .route("/v1/petitions", post(submit))
        .route("/v1/cases", get(list))
        .route("/v1/node/overview", get(overview))
        .route("/v1/cases/{id}", get(case))
        .route("/v1/cases/{id}/status", get(status))
        .route("/v1/cases/{id}/actions", post(act))
        .route("/v1/receptions", get(receptions).post(publish_reception))
        .route("/v1/receptions/{id}/appointments", get(appointments).post(book))
        .route("/v1/receptions/{id}/appointments/{appointment}", post(record_reception))
        .route("/v1/campaigns", get(campaigns).post(open_campaign))
        .route("/v1/campaigns/{id}", get(campaign))
        .route("/v1/campaigns/{id}/cases", post(mark_cases))
        .route("/v1/city/figures", get(city_figures))
        .layer(axum::middleware::from_fn_with_state(gate, xinfang_shared::gate::layer))
        .with_state(intake)
}

/// `GET /v1/node/links` (DESIGN.md §10): the node's links to its parent and children, what
/// its outbox still owes and what its inbox still lacks.
pub fn links_router(links: Arc<Links>) -> Router {
    Router::new()
        .route("/v1/node/links", get(|State(links): State<Arc<Links>>| async move { Json(links.view()) }))
        .with_state(links)
}

/// A JSON 404 for every unknown path.
pub async fn fallback() -> Response {
    error(&ApiError::general(ErrorCode::NotFound, "no such endpoint"))
}

fn error(e: &ApiError) -> Response {
    xinfang_shared::gate::refusal(e)
}

fn reply(intake: &Intake, endpoint: &str, started: Instant, result: Result<(StatusCode, Value), ApiError>) -> Response {
    intake.metrics.latency.with_label_values(&[endpoint, "http"]).observe(started.elapsed().as_secs_f64());
    match result {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(e) => {
            intake.metrics.refusals.with_label_values(&[e.code.as_str()]).inc();
            error(&e)
        }
    }
}

/// How much of an oversized body is read and discarded before answering 413, so that a
/// client still sending gets the answer instead of a broken connection.
const DRAIN_LIMIT: usize = 16 << 20;

/// Reads at most `MAX_BODY_BYTES`; a larger body is `payload_too_large`, never a cut-off read.
async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    use futures::StreamExt;
    let too_large = || {
        ApiError::general(ErrorCode::PayloadTooLarge, format!("the request body is larger than {MAX_BODY_BYTES} bytes"))
    };
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::general(ErrorCode::InvalidJson, "the request body could not be read"))?;
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            return Err(too_large());
        }
        if seen <= MAX_BODY_BYTES {
            buf.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

async fn submit(State(intake): State<Arc<Intake>>, Extension(caller): Extension<Caller>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        let bytes = read_body(body).await?;
        intake.submit_counted(&caller, &bytes).await
    }
    .await
    .map(|s: Submitted| {
        let status = if s.replayed { StatusCode::OK } else { StatusCode::CREATED };
        (status, serde_json::to_value(s.receipt).expect("serializes"))
    });
    reply(&intake, "submit", started, result)
}

async fn case(
    State(intake): State<Arc<Intake>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let started = Instant::now();
    let result = intake.case_view(&caller, &id).await.map(|v| (StatusCode::OK, v));
    reply(&intake, "case_get", started, result)
}

async fn list(
    State(intake): State<Arc<Intake>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let started = Instant::now();
    let query = Value::Object(query.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
    let result = intake.case_list(&caller, &query).await.map(|v| (StatusCode::OK, v));
    reply(&intake, "case_list", started, result)
}

async fn overview(State(intake): State<Arc<Intake>>, Extension(caller): Extension<Caller>) -> Response {
    let started = Instant::now();
    let result = intake.overview(&caller).await.map(|v| (StatusCode::OK, v));
    reply(&intake, "node_overview", started, result)
}

#[derive(Deserialize)]
struct StatusQuery {
    query_code: Option<String>,
}

async fn status(
    State(intake): State<Arc<Intake>>,
    Path(id): Path<String>,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let result = match query.ok().and_then(|q| q.0.query_code) {
        None => {
            Err(ApiError::field(ErrorCode::MissingField, "query_code", "the query code from the receipt is required"))
        }
        Some(code) => intake.status_view(&id, &code).await.map(|v| (StatusCode::OK, v)),
    };
    reply(&intake, "case_status", started, result)
}

async fn act(
    State(intake): State<Arc<Intake>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result =
        async { intake.act_counted(&caller, &id, &json_body(body).await?).await }.await.map(|v| (StatusCode::OK, v));
    reply(&intake, "case_act", started, result)
}

/// A JSON body read within the size limit.
async fn json_body(body: Body) -> Result<Value, ApiError> {
    let bytes = read_body(body).await?;
    xinfang_shared::petition::parse_body(&bytes)
}

async fn receptions(State(intake): State<Arc<Intake>>) -> Response {
    let started = Instant::now();
    let result = intake.receptions().await.map(|v| (StatusCode::OK, v));
    reply(&intake, "receptions", started, result)
}

async fn publish_reception(
    State(intake): State<Arc<Intake>>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async { intake.publish_reception(&caller, &json_body(body).await?).await }
        .await
        .map(|v| (StatusCode::CREATED, v));
    reply(&intake, "reception_publish", started, result)
}

async fn appointments(
    State(intake): State<Arc<Intake>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let started = Instant::now();
    let result = intake.appointments(&caller, &id).await.map(|v| (StatusCode::OK, v));
    reply(&intake, "appointments", started, result)
}

async fn book(
    State(intake): State<Arc<Intake>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result =
        async { intake.book(&caller, &id, &json_body(body).await?).await }.await.map(|v| (StatusCode::CREATED, v));
    reply(&intake, "appointment_book", started, result)
}

async fn record_reception(
    State(intake): State<Arc<Intake>>,
    Extension(caller): Extension<Caller>,
    Path((id, appointment)): Path<(String, String)>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async { intake.record_reception(&caller, &id, &appointment, &json_body(body).await?).await }
        .await
        .map(|v| (StatusCode::OK, v));
    reply(&intake, "reception_record", started, result)
}

async fn campaigns(State(intake): State<Arc<Intake>>, Extension(caller): Extension<Caller>) -> Response {
    let started = Instant::now();
    let result = intake.campaign_list(&caller).await.map(|v| (StatusCode::OK, v));
    reply(&intake, "campaigns", started, result)
}

async fn open_campaign(
    State(intake): State<Arc<Intake>>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result =
        async { intake.open_campaign(&caller, &json_body(body).await?).await }.await.map(|v| (StatusCode::CREATED, v));
    reply(&intake, "campaign_open", started, result)
}

async fn campaign(
    State(intake): State<Arc<Intake>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let started = Instant::now();
    let result = intake.campaign_view(&caller, &id).await.map(|v| (StatusCode::OK, v));
    reply(&intake, "campaign_get", started, result)
}

async fn mark_cases(
    State(intake): State<Arc<Intake>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result =
        async { intake.mark_cases(&caller, &id, &json_body(body).await?).await }.await.map(|v| (StatusCode::OK, v));
    reply(&intake, "campaign_mark", started, result)
}

async fn city_figures(State(intake): State<Arc<Intake>>, Extension(caller): Extension<Caller>) -> Response {
    let started = Instant::now();
    let result = crate::figures::city_view(&intake, &caller).await.map(|v| (StatusCode::OK, v));
    reply(&intake, "city_figures", started, result)
}
