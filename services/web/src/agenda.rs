//! Reception days and campaigns on the pages (DESIGN.md §14): the public schedule of leaders'
//! reception days (领导接访日) and its booking form (约访); the bureau's schedule keeping
//! (publish a slot, record who came and what the leader decided); the campaigns (攻坚化解):
//! open one, mark its cases, follow its progress by district and by leader; and the city view
//! (各区县) of every district's figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde_json::{json, Value};
use xinfang_shared::error::ApiError;

use crate::auth::Staff;
use crate::calls::As;
use crate::views::{self, field, page};
use crate::Web;

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/receptions", get(schedule))
        .route("/receptions/{id}/book", get(book_page).post(book))
        .route("/agenda", get(agenda).post(publish))
        .route("/agenda/{id}", get(slot))
        .route("/agenda/{id}/{appointment}", post(record))
        .route("/campaigns", get(campaigns).post(open_campaign))
        .route("/campaigns/{id}", get(campaign))
        .route("/campaigns/{id}/cases", post(mark))
        .route("/city", get(city))
}

/// The upcoming slots (the public list).
async fn upcoming(web: &Web) -> Result<Vec<Value>, ApiError> {
    let v = web.calls.call(As::Public, "reception.list", &json!({})).await?;
    Ok(v["receptions"].as_array().cloned().unwrap_or_default())
}

/// `GET /receptions`: the published schedule (领导接访日安排).
async fn schedule(State(web): State<Arc<Web>>) -> Response {
    match upcoming(&web).await {
        Ok(receptions) => page(&web, StatusCode::OK, "receptions.html", None, minijinja::context! { receptions }),
        Err(e) => views::refused(&web, None, &e),
    }
}

fn book_form(
    web: &Web,
    status: StatusCode,
    slot: Value,
    form: Value,
    errors: Value,
    error: Option<String>,
) -> Response {
    let ctx = minijinja::context! {
        slot, form, errors, error, ..views::petition_choices(web),
    };
    page(web, status, "book.html", None, ctx)
}

async fn slot_of(web: &Web, id: &str) -> Result<Value, ApiError> {
    upcoming(web).await?.into_iter().find(|s| s["reception_id"] == id).ok_or_else(|| {
        ApiError::general(xinfang_shared::error::ErrorCode::NotFound, format!("没有接访场次 {id}，或已结束"))
    })
}

/// `GET /receptions/{id}/book`: the booking form, with a new petition or an existing case.
async fn book_page(State(web): State<Arc<Web>>, Path(id): Path<String>) -> Response {
    match slot_of(&web, &id).await {
        Ok(slot) => book_form(&web, StatusCode::OK, slot, json!({"headcount": 1}), json!({}), None),
        Err(e) => views::refused(&web, None, &e),
    }
}

/// `POST /receptions/{id}/book`: books as the public, counted against the address's limit. A
/// refusal shows the form again with the message beside its field.
async fn book(
    State(web): State<Arc<Web>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if let Err(e) = web.gate.caller(None, Some(client.ip())).await {
        return views::refused(&web, None, &e);
    }
    let slot = match slot_of(&web, &id).await {
        Ok(s) => s,
        Err(e) => return views::refused(&web, None, &e),
    };
    let mut body = json!({"reception_id": id});
    if field(&form, "with") == "case" {
        body["case_id"] = json!(field(&form, "case_id"));
        body["query_code"] = json!(field(&form, "query_code"));
    } else {
        let mut petition = crate::staff::petition_of(&form);
        if let Some(p) = petition.as_object_mut() {
            p.remove("with");
            p.remove("case_id");
            p.remove("query_code");
        }
        body["petition"] = petition;
    }
    match web.calls.call(As::Public, "reception.book", &body).await {
        Ok(booked) => page(&web, StatusCode::CREATED, "booked.html", None, minijinja::context! { booked, slot }),
        Err(e) => {
            let status = views::status_of(&e);
            let name = e.field.as_deref().map(|f| f.strip_prefix("petition.").unwrap_or(f).to_string());
            let (errors, error) = match name {
                Some(f) if form.contains_key(&f) => (json!({ f: e.message }), None),
                _ => (json!({}), Some(e.message.clone())),
            };
            book_form(&web, status, slot, serde_json::to_value(&form).unwrap_or_default(), errors, error)
        }
    }
}

/// The bureau's schedule page with the publish form.
async fn agenda_page(web: &Web, staff: &Staff, status: StatusCode, form: Value, error: Option<&ApiError>) -> Response {
    match upcoming(web).await {
        Ok(receptions) => {
            let error = error.map(views::message_of);
            page(web, status, "agenda.html", Some(staff), minijinja::context! { receptions, form, error })
        }
        Err(e) => views::refused(web, Some(staff), &e),
    }
}

/// `GET /agenda`: the bureau's reception days (接访安排).
async fn agenda(State(web): State<Arc<Web>>, staff: Staff, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let form = json!({"published": q.get("published"), "capacity": 20});
    agenda_page(&web, &staff, StatusCode::OK, form, None).await
}

/// The slot JSON of the publish form: a date and two times of day in China Standard Time.
pub fn slot_of_form(form: &BTreeMap<String, String>) -> Value {
    let day = field(form, "date");
    let at = |t: &str| if day.is_empty() || t.is_empty() { String::new() } else { format!("{day}T{t}:00+08:00") };
    let topics: Vec<&str> =
        field(form, "topics").split(['，', ',', '、']).map(str::trim).filter(|t| !t.is_empty()).collect();
    json!({
        "leader": {"name": field(form, "leader.name"), "title": field(form, "leader.title")},
        "starts_at": at(field(form, "starts")),
        "ends_at": at(field(form, "ends")),
        "place": field(form, "place"),
        "topics": topics,
        "capacity": field(form, "capacity").parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(field(form, "capacity"))),
    })
}

/// `POST /agenda`: publishes a slot.
async fn publish(State(web): State<Arc<Web>>, staff: Staff, Form(form): Form<BTreeMap<String, String>>) -> Response {
    match web.calls.call(As::Session(&staff.session_id), "reception.publish", &slot_of_form(&form)).await {
        Ok(v) => Redirect::to(&format!("/agenda?published={}", v["reception_id"].as_str().unwrap_or_default()))
            .into_response(),
        Err(e) => {
            let form = serde_json::to_value(&form).unwrap_or_default();
            agenda_page(&web, &staff, views::status_of(&e), form, Some(&e)).await
        }
    }
}

async fn slot_page(web: &Web, staff: &Staff, id: &str, notice: Option<String>, error: Option<&ApiError>) -> Response {
    let body = json!({"reception_id": id});
    match web.calls.call(As::Session(&staff.session_id), "reception.appointments", &body).await {
        Ok(v) => {
            let status = error.map_or(StatusCode::OK, views::status_of);
            let error = error.map(|e| e.message.clone());
            let ctx = minijinja::context! { r => v["reception"].clone(), appointments => v["appointments"].clone(), notice, error };
            page(web, status, "slot.html", Some(staff), ctx)
        }
        Err(e) => views::refused(web, Some(staff), &e),
    }
}

/// `GET /agenda/{id}`: a slot's bookings and their records.
async fn slot(
    State(web): State<Arc<Web>>,
    staff: Staff,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let notice = q.get("recorded").map(|a| format!("已记录：{a}"));
    slot_page(&web, &staff, &id, notice, None).await
}

/// `POST /agenda/{id}/{appointment}`: the clerk's record of one appointment.
async fn record(
    State(web): State<Arc<Web>>,
    staff: Staff,
    Path((id, appointment)): Path<(String, String)>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let body = json!({"reception_id": id, "appointment_id": appointment,
                      "attended": field(&form, "attended") == "true", "outcome": field(&form, "outcome")});
    match web.calls.call(As::Session(&staff.session_id), "reception.record", &body).await {
        Ok(_) => Redirect::to(&format!("/agenda/{id}?recorded={appointment}")).into_response(),
        Err(e) => slot_page(&web, &staff, &id, None, Some(&e)).await,
    }
}

async fn campaigns_page(
    web: &Web,
    staff: &Staff,
    status: StatusCode,
    form: Value,
    error: Option<&ApiError>,
) -> Response {
    match web.calls.call(As::Session(&staff.session_id), "campaign.list", &json!({})).await {
        Ok(v) => {
            let error = error.map(views::message_of);
            let ctx = minijinja::context! { campaigns => v["campaigns"].clone(), form, error };
            page(web, status, "campaigns.html", Some(staff), ctx)
        }
        Err(e) => views::refused(web, Some(staff), &e),
    }
}

/// `GET /campaigns`: the node's campaigns (攻坚化解) and the form to open one.
async fn campaigns(State(web): State<Arc<Web>>, staff: Staff) -> Response {
    campaigns_page(
        &web,
        &staff,
        StatusCode::OK,
        json!({"target_settled_rate": 90, "target_satisfaction_rate": 98}),
        None,
    )
    .await
}

/// `POST /campaigns`: opens a campaign (the form's rates are percentages).
async fn open_campaign(
    State(web): State<Arc<Web>>,
    staff: Staff,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let rate =
        |k: &str| field(&form, k).parse::<f64>().map(|p| json!(p / 100.0)).unwrap_or_else(|_| json!(field(&form, k)));
    let body = json!({"name": field(&form, "name"), "starts_on": field(&form, "starts_on"), "ends_on": field(&form, "ends_on"),
                      "target_settled_rate": rate("target_settled_rate"),
                      "target_satisfaction_rate": rate("target_satisfaction_rate")});
    match web.calls.call(As::Session(&staff.session_id), "campaign.open", &body).await {
        Ok(v) => Redirect::to(&format!("/campaigns/{}", v["campaign_id"].as_str().unwrap_or_default())).into_response(),
        Err(e) => {
            let form = serde_json::to_value(&form).unwrap_or_default();
            campaigns_page(&web, &staff, views::status_of(&e), form, Some(&e)).await
        }
    }
}

async fn campaign_page(
    web: &Web,
    staff: &Staff,
    id: &str,
    notice: Option<String>,
    error: Option<&ApiError>,
) -> Response {
    match web.calls.call(As::Session(&staff.session_id), "campaign.get", &json!({"campaign_id": id})).await {
        Ok(v) => {
            let status = error.map_or(StatusCode::OK, views::status_of);
            let error = error.map(views::message_of);
            let ctx = minijinja::context! {
                c => v["campaign"].clone(), p => v["progress"].clone(), cases => v["cases"].clone(), notice, error,
            };
            page(web, status, "campaign.html", Some(staff), ctx)
        }
        Err(e) => views::refused(web, Some(staff), &e),
    }
}

/// `GET /campaigns/{id}`: progress against the targets, by district and by leader.
async fn campaign(
    State(web): State<Arc<Web>>,
    staff: Staff,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let notice = q.get("marked").map(|n| format!("已列入 {n} 件"));
    campaign_page(&web, &staff, &id, notice, None).await
}

/// `POST /campaigns/{id}/cases`: marks the case ids typed (one per line, or separated by
/// commas or spaces).
async fn mark(
    State(web): State<Arc<Web>>,
    staff: Staff,
    Path(id): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let ids: Vec<&str> =
        field(&form, "case_ids").split([',', '，', ' ', '\n', '\r']).filter(|s| !s.is_empty()).collect();
    let body = json!({"campaign_id": id, "case_ids": ids});
    match web.calls.call(As::Session(&staff.session_id), "campaign.mark", &body).await {
        Ok(v) => Redirect::to(&format!("/campaigns/{id}?marked={}", v["marked"])).into_response(),
        Err(e) => campaign_page(&web, &staff, &id, None, Some(&e)).await,
    }
}

/// `GET /city` (各区县): every district's campaign and reception figures, as reported up.
async fn city(State(web): State<Arc<Web>>, staff: Staff) -> Response {
    match web.calls.call(As::Session(&staff.session_id), "city.figures", &json!({})).await {
        Ok(v) => {
            page(&web, StatusCode::OK, "city.html", Some(&staff), minijinja::context! { nodes => v["nodes"].clone() })
        }
        Err(e) => views::refused(&web, Some(&staff), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_form_makes_a_slot_in_china_standard_time() {
        let form: BTreeMap<String, String> = [
            ("leader.name", "张明"),
            ("leader.title", "区长"),
            ("date", "2026-12-10"),
            ("starts", "09:00"),
            ("ends", "11:30"),
            ("place", "接待大厅"),
            ("topics", "城建，物业、 教育"),
            ("capacity", "20"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = slot_of_form(&form);
        assert_eq!(s["starts_at"], "2026-12-10T09:00:00+08:00");
        assert_eq!(s["topics"], json!(["城建", "物业", "教育"]));
        assert_eq!(s["capacity"], 20);
    }
}
