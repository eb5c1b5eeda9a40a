//! The public's pages (查询): a case's progress by case id and query code — stage, timeline
//! and due dates, never personal data — and the petitioner's own actions (evaluate, request
//! review …) with the same code. Every lookup and action counts against the address's rate
//! limit, so query codes cannot be walked (429 `rate_limited`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde_json::{json, Value};
use xinfang_shared::error::{ApiError, ErrorCode};

use crate::calls::As;
use crate::views::{self, field, page};
use crate::Web;

pub fn routes() -> Router<Arc<Web>> {
    Router::new().route("/query", get(query_page).post(lookup)).route("/query/act", post(act))
}

const SATISFACTIONS: &[&str] = &["satisfied", "basically_satisfied", "unsatisfied"];

async fn query_page(State(web): State<Arc<Web>>) -> Response {
    page(&web, StatusCode::OK, "query.html", None, minijinja::context! { case_id => "" })
}

/// The status page of a case, or the query form again with why not.
async fn status(web: &Web, case_id: &str, code: &str, notice: Option<&str>, error: Option<String>) -> Response {
    let body = json!({"case_id": case_id, "query_code": code});
    match web.calls.call(As::Public, "case.status", &body).await {
        Ok(s) => {
            let ctx = minijinja::context! { s, query_code => code, notice, error, satisfactions => SATISFACTIONS };
            page(web, StatusCode::OK, "status.html", None, ctx)
        }
        Err(e) if e.code == ErrorCode::NotFound || e.code == ErrorCode::InvalidField => {
            let ctx = minijinja::context! { case_id, error => "案件编号或查询码不正确" };
            page(web, StatusCode::NOT_FOUND, "query.html", None, ctx)
        }
        Err(e) => views::refused(web, None, &e),
    }
}

/// Counts the request against the address's limit.
async fn limited(web: &Web, client: SocketAddr) -> Result<(), ApiError> {
    web.gate.caller(None, Some(client.ip())).await.map(|_| ())
}

/// `POST /query`: the code travels in the body, not the address, so it stays out of logs and
/// browser history.
async fn lookup(
    State(web): State<Arc<Web>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if let Err(e) = limited(&web, client).await {
        return views::refused(&web, None, &e);
    }
    status(&web, field(&form, "case_id"), field(&form, "query_code"), None, None).await
}

/// `POST /query/act`: the petitioner's own action, proven by the query code.
async fn act(
    State(web): State<Arc<Web>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if let Err(e) = limited(&web, client).await {
        return views::refused(&web, None, &e);
    }
    let (case_id, code) = (field(&form, "case_id"), field(&form, "query_code"));
    let action = field(&form, "action");
    let mut body = json!({"case_id": case_id, "query_code": code, "action": action});
    for key in ["satisfaction", "reason"] {
        if !field(&form, key).is_empty() {
            body[key] = Value::from(field(&form, key));
        }
    }
    match web.calls.call(As::Public, "case.act", &body).await {
        Ok(_) => {
            let done = format!("已提交：{}", views::label(action).unwrap_or(action));
            status(&web, case_id, code, Some(&done), None).await
        }
        Err(e) => status(&web, case_id, code, None, Some(e.message)).await,
    }
}
