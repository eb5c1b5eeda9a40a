//! The pages of the bureau's clerks and the organs' staff: registration (登记), the inbox
//! (待办), a case with its actions, and the node's overview (本级). Each renders what intake
//! answers for the signed-in user; a role that may not do something gets intake's refusal.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde_json::{json, Map, Value};
use xinfang_shared::error::ApiError;
use xinfang_shared::petition::Channel;
use xinfang_shared::state::Stage;

use crate::auth::Staff;
use crate::calls::As;
use crate::views::{self, page};
use crate::Web;

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/register", get(register_page).post(register))
        .route("/inbox", get(inbox))
        .route("/overview", get(overview))
        .route("/cases/{id}", get(case))
        .route("/cases/{id}/act", post(act))
}

/// Every stage with its label, in the order of a case's life.
fn stages() -> Vec<(&'static str, &'static str)> {
    [
        Stage::AwaitingRoute,
        Stage::WithOrgan,
        Stage::Accepted,
        Stage::Replied,
        Stage::ReviewRequested,
        Stage::ReviewReplied,
        Stage::RereviewRequested,
        Stage::InHearing,
        Stage::Forwarded,
        Stage::Rejected,
        Stage::Terminated,
        Stage::Closed,
    ]
    .into_iter()
    .map(|s| (s.as_str(), s.label_zh()))
    .collect()
}

fn organs(web: &Web) -> Vec<Value> {
    let node = &web.settings.node.code;
    web.settings.organs.iter().filter(|o| &o.node == node).map(|o| json!({"id": o.id, "name": o.name})).collect()
}

fn register_form(
    web: &Web,
    staff: &Staff,
    status: StatusCode,
    form: Value,
    errors: Value,
    error: Option<String>,
) -> Response {
    let ctx = minijinja::context! {
        form, errors, error,
        channels => Channel::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        organs => organs(web),
        ..views::petition_choices(web),
    };
    page(web, status, "register.html", Some(staff), ctx)
}

/// `GET /register`: the form, with a fresh idempotency key so a double submit registers once.
async fn register_page(State(web): State<Arc<Web>>, staff: Staff) -> Response {
    let form = json!({"idempotency_key": ulid::Ulid::new().to_string(), "channel": "visit", "headcount": 1});
    register_form(&web, &staff, StatusCode::OK, form, json!({}), None)
}

/// The petition JSON of the registration form: each input is named by its JSON path
/// (`petitioners[0].phone`, `location.division`), so a refusal's `field` names the input.
pub fn petition_of(form: &BTreeMap<String, String>) -> Value {
    let mut petitioner = Map::new();
    let mut location = Map::new();
    let mut petition = Map::new();
    for (key, value) in form {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            k if k.starts_with("petitioners[0].") => {
                petitioner.insert(k["petitioners[0].".len()..].to_string(), json!(value));
            }
            k if k.starts_with("location.") => {
                location.insert(k["location.".len()..].to_string(), json!(value));
            }
            "headcount" => {
                petition.insert(key.clone(), value.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(value)));
            }
            // datetime-local has no offset: the clerk's time is China Standard Time
            "received_at" if value.len() == 16 => {
                petition.insert(key.clone(), json!(format!("{value}:00+08:00")));
            }
            _ => {
                petition.insert(key.clone(), json!(value));
            }
        }
    }
    petition.insert("petitioners".into(), json!([petitioner]));
    petition.insert("location".into(), Value::Object(location));
    Value::Object(petition)
}

/// `POST /register`: submitted as the clerk; a refusal shows the form again with the message
/// beside its field.
async fn register(State(web): State<Arc<Web>>, staff: Staff, Form(form): Form<BTreeMap<String, String>>) -> Response {
    let petition = petition_of(&form);
    match web.calls.call(As::Session(&staff.session_id), "petition.submit", &petition).await {
        Ok(receipt) => page(&web, StatusCode::CREATED, "receipt.html", Some(&staff), minijinja::context! { receipt }),
        Err(e) => {
            let status = views::status_of(&e);
            let (errors, error) = match &e.field {
                Some(f) if form.contains_key(f) => (json!({ f.clone(): e.message }), None),
                Some(f) if f.starts_with("petitioners") => (json!({"petitioners": e.message}), None),
                _ => (json!({}), Some(e.message.clone())),
            };
            let form = serde_json::to_value(&form).unwrap_or_default();
            register_form(&web, &staff, status, form, errors, error)
        }
    }
}

/// `GET /inbox?stage=&organ_id=&late=`: the open cases in the user's scope, overdue first.
async fn inbox(State(web): State<Arc<Web>>, staff: Staff, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let filter = json!({
        "stage": q.get("stage").filter(|s| !s.is_empty()),
        "organ_id": q.get("organ_id").filter(|s| !s.is_empty()),
        "late": q.get("late").is_some_and(|v| v == "true"),
    });
    match web.calls.call(As::Session(&staff.session_id), "case.list", &filter).await {
        Ok(v) => {
            let ctx = minijinja::context! {
                cases => v["cases"].clone(), total => v["total"].clone(), filter,
                stages => stages(), organs => organs(&web),
            };
            page(&web, StatusCode::OK, "inbox.html", Some(&staff), ctx)
        }
        Err(e) => views::refused(&web, Some(&staff), &e),
    }
}

/// `GET /overview`: the node's counts by stage and organ, late cases, repeats.
async fn overview(State(web): State<Arc<Web>>, staff: Staff) -> Response {
    match web.calls.call(As::Session(&staff.session_id), "node.overview", &json!({})).await {
        Ok(o) => {
            page(&web, StatusCode::OK, "overview.html", Some(&staff), minijinja::context! { o, stages => stages() })
        }
        Err(e) => views::refused(&web, Some(&staff), &e),
    }
}

/// The petition a case's events carry: its `registered` event, or the one inside the snapshot
/// of a case transferred in.
fn petition(events: &[Value]) -> Value {
    for e in events {
        match e["type"].as_str() {
            Some("registered") => return e["data"].clone(),
            Some("transferred_in") => {
                if let Some(first) = e["data"]["snapshot"].as_array().and_then(|s| s.first()) {
                    return first["data"].clone();
                }
            }
            _ => {}
        }
    }
    Value::Null
}

async fn case_page(web: &Web, staff: &Staff, id: &str, notice: Option<&str>, error: Option<&ApiError>) -> Response {
    let case = match web.calls.call(As::Session(&staff.session_id), "case.get", &json!({"case_id": id})).await {
        Ok(c) => c,
        Err(e) => return views::refused(web, Some(staff), &e),
    };
    let events = case["events"].as_array().cloned().unwrap_or_default();
    let now = xinfang_shared::time::now_cst();
    let dues: Vec<Value> = case["due"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(step, d)| {
                    let at = d["due_at"].as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
                    let left = at.map(|t| (t - now).num_seconds()).unwrap_or(0);
                    let urgency = if left < 0 { "overdue" } else { "normal" };
                    json!({"step": step, "due_at": d["due_at"], "provisional": d["provisional"], "seconds_left": left, "urgency": urgency})
                })
                .collect()
        })
        .unwrap_or_default();
    // auditors read; only those who may act see the forms
    let may_act = staff.has(xinfang_shared::access::Role::Bureau) || staff.has(xinfang_shared::access::Role::Organ);
    let actions = if may_act { case["actions"].clone() } else { json!([]) };
    let ctx = minijinja::context! {
        petition => petition(&events), case, dues, actions, notice, error => error.map(views::message_of),
        organs => organs(web),
        reject_reasons => ["litigation_channel", "same_matter_in_progress", "terminated_matter", "not_a_petition", "other"],
        outcomes => ["supported", "partly_supported", "not_supported", "explained"],
    };
    let status = error.map_or(StatusCode::OK, views::status_of);
    page(web, status, "case.html", Some(staff), ctx)
}

/// `GET /cases/{id}`: the case as intake lets the user see it (another organ's: not found).
async fn case(
    State(web): State<Arc<Web>>,
    staff: Staff,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let notice = q.get("done").and_then(|a| views::label(a)).map(|l| format!("已办理：{l}"));
    case_page(&web, &staff, &id, notice.as_deref(), None).await
}

/// The action JSON of an action form: empty inputs left out, `days` a number, `leader.name`
/// and `leader.title` one `leader`.
pub fn action_of(form: &BTreeMap<String, String>) -> Value {
    let mut body = Map::new();
    for (key, value) in form {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if let Some(part) = key.strip_prefix("leader.") {
            let leader = body.entry("leader").or_insert_with(|| json!({}));
            leader[part] = json!(value);
            continue;
        }
        let v = match key.as_str() {
            "days" => value.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(value)),
            _ => json!(value),
        };
        body.insert(key.clone(), v);
    }
    Value::Object(body)
}

/// `POST /cases/{id}/act`: the action as the signed-in user; back to the case with what
/// happened.
async fn act(
    State(web): State<Arc<Web>>,
    staff: Staff,
    Path(id): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let mut body = action_of(&form);
    body["case_id"] = json!(id);
    match web.calls.call(As::Session(&staff.session_id), "case.act", &body).await {
        Ok(_) => {
            let done = form.get("action").map(String::as_str).unwrap_or_default();
            Redirect::to(&format!("/cases/{id}?done={done}")).into_response()
        }
        Err(e) => case_page(&web, &staff, &id, None, Some(&e)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_inputs_named_by_json_path_make_the_petition() {
        let form: BTreeMap<String, String> = [
            ("channel", "visit"),
            ("received_at", "2026-12-01T09:30"),
            ("headcount", "2"),
            ("petitioners[0].name", "张三"),
            ("petitioners[0].phone", "13812345678"),
            ("petitioners[0].id_number", ""),
            ("location.division", "320211"),
            ("respondent_organ_id", ""),
            ("title", "电梯故障"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = petition_of(&form);
        assert_eq!(p["received_at"], "2026-12-01T09:30:00+08:00");
        assert_eq!(p["headcount"], 2);
        assert_eq!(p["petitioners"], json!([{"name": "张三", "phone": "13812345678"}]));
        assert_eq!(p["location"], json!({"division": "320211"}));
        assert!(p.get("respondent_organ_id").is_none(), "an empty choice is left out");
    }
}
