//! The city office's pages (联席会议办公室督办件), behind the `office` role (auditors read):
//! the inbox of escalations from the districts, one escalation with the case's timeline as the
//! district sent it, and the forms to acknowledge (签收) and send a directive (督办单) down.
//! They render escalation's answers over NATS; acknowledgements and directives are signed
//! with the user's name.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde_json::{json, Value};
use xinfang_shared::access::Role;
use xinfang_shared::error::ApiError;

use crate::auth::Staff;
use crate::calls::As;
use crate::views::{self, page};
use crate::Web;

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/escalations", get(list))
        .route("/escalations/{id}", get(detail))
        .route("/escalations/{id}/{answer}", post(answer))
}

/// `GET /escalations?state=&level=&child=`: pending ones unless another state is asked for.
async fn list(State(web): State<Arc<Web>>, staff: Staff, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let pick = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let filter = json!({
        "state": pick("state").unwrap_or_else(|| "pending".into()),
        "level": pick("level"),
        "child": pick("child"),
    });
    match web.calls.call(As::Session(&staff.session_id), "escalation.list", &filter).await {
        Ok(v) => {
            let ctx = minijinja::context! {
                items => v["escalations"].clone(), filter, can_direct => staff.has(Role::Office),
            };
            page(&web, StatusCode::OK, "escalations.html", Some(&staff), ctx)
        }
        Err(e) => views::refused(&web, Some(&staff), &e),
    }
}

async fn detail_page(web: &Web, staff: &Staff, id: &str, error: Option<&ApiError>) -> Response {
    match web.calls.call(As::Session(&staff.session_id), "escalation.get", &json!({"id": id})).await {
        Ok(v) => {
            let status = error.map_or(StatusCode::OK, views::status_of);
            let ctx = minijinja::context! {
                v => v["escalation"].clone(), can_direct => staff.has(Role::Office),
                error => error.map(|e| e.message.clone()),
            };
            page(web, status, "escalation.html", Some(staff), ctx)
        }
        Err(e) => views::refused(web, Some(staff), &e),
    }
}

async fn detail(State(web): State<Arc<Web>>, staff: Staff, Path(id): Path<String>) -> Response {
    detail_page(&web, &staff, &id, None).await
}

/// The form's fields as a JSON body signed by the user (`by`), with the escalation's id.
fn signed(staff: &Staff, id: &str, form: BTreeMap<String, String>) -> Value {
    let mut body: serde_json::Map<String, Value> =
        form.into_iter().filter(|(k, _)| k != "by").map(|(k, v)| (k, Value::String(v))).collect();
    body.insert("id".into(), json!(id));
    body.insert("by".into(), json!(staff.identity.display));
    Value::Object(body)
}

/// `POST /escalations/{id}/ack` (签收) and `…/directive` (下发督办单): the form as the answer,
/// signed with the user's name; back to the escalation, or its page with what was wrong.
async fn answer(
    State(web): State<Arc<Web>>,
    staff: Staff,
    Path((id, answer)): Path<(String, String)>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let endpoint = match answer.as_str() {
        "ack" => "escalation.ack",
        "directive" => "escalation.directive",
        _ => return views::not_found().await,
    };
    match web.calls.call(As::Session(&staff.session_id), endpoint, &signed(&staff, &id, form)).await {
        Ok(_) => Redirect::to(&format!("/escalations/{id}")).into_response(),
        Err(e) => detail_page(&web, &staff, &id, Some(&e)).await,
    }
}
