//! The NATS service endpoints (async-nats service API, queue group): `xf.N.api.petition.submit`,
//! `…case.get`, `…case.status`, `…case.act`, `…case.list`, `…node.overview`, and the agenda's
//! `…reception.{publish,list,appointments,book,record}`, `…campaign.{open,list,get,mark}` and
//! `…city.figures`
//! (the path's ids as body fields). Replies are JSON: the same bodies as over HTTP.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use xinfang_shared::access::Caller;
use xinfang_shared::endpoints::{self, Endpoint};
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::petition::parse_body;
use xinfang_shared::subjects;
use xinfang_shared::CancellationToken;

use crate::register::Submitted;
use crate::Intake;

/// Starts the service and serves requests until `shutdown`; `registered` is told once every
/// endpoint is subscribed.
pub async fn serve(
    client: async_nats::Client,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
    registered: tokio::sync::oneshot::Sender<()>,
) -> Result<(), String> {
    let node = intake.ledger.node().clone();
    let endpoints = [
        ("petition_submit", "petition.submit"),
        ("case_get", "case.get"),
        ("case_status", "case.status"),
        ("case_act", "case.act"),
        ("case_list", "case.list"),
        ("node_overview", "node.overview"),
        ("reception_publish", "reception.publish"),
        ("reception_list", "reception.list"),
        ("reception_appointments", "reception.appointments"),
        ("reception_book", "reception.book"),
        ("reception_record", "reception.record"),
        ("campaign_open", "campaign.open"),
        ("campaign_list", "campaign.list"),
        ("campaign_get", "campaign.get"),
        ("campaign_mark", "campaign.mark"),
        ("city_figures", "city.figures"),
    ]
    .into_iter()
    .map(|(name, endpoint)| Endpoint { name, subject: subjects::api(&node, endpoint) })
    .collect();
    let (description, group) = (format!("xinfang intake of node {node}"), format!("xf-intake-{node}"));
    endpoints::serve(
        client,
        "xinfang-intake",
        description,
        group,
        endpoints,
        shutdown,
        registered,
        move |name, headers, payload| {
            let intake = intake.clone();
            async move {
                let started = Instant::now();
                let handled = match intake.gate.nats_caller(headers.as_ref()).await {
                    Ok(caller) => handle(&intake, &caller, name, &payload).await,
                    Err(e) => Err(e),
                };
                let body = match handled {
                    Ok(v) => v,
                    Err(e) => {
                        intake.metrics.refusals.with_label_values(&[e.code.as_str()]).inc();
                        e.to_body()
                    }
                };
                intake.metrics.latency.with_label_values(&[name, "nats"]).observe(started.elapsed().as_secs_f64());
                body
            }
        },
    )
    .await
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Err(ApiError::field(ErrorCode::MissingField, key, format!("{key} is required"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::field(ErrorCode::InvalidField, key, "must be a string")),
    }
}

/// Takes the id `key` (an HTTP path's id) out of a body.
fn take(v: &mut Value, key: &str) -> Result<String, ApiError> {
    let id = field(v, key)?.to_string();
    v.as_object_mut().map(|o| o.remove(key));
    Ok(id)
}

async fn handle(intake: &Intake, caller: &Caller, endpoint: &str, payload: &[u8]) -> Result<Value, ApiError> {
    match endpoint {
        "petition_submit" => {
            let s: Submitted = intake.submit_counted(caller, payload).await?;
            Ok(serde_json::to_value(s.receipt).expect("serializes"))
        }
        "case_get" => {
            let v = parse_body(payload)?;
            intake.case_view(caller, field(&v, "case_id")?).await
        }
        "case_status" => {
            let v = parse_body(payload)?;
            intake.status_view(field(&v, "case_id")?, field(&v, "query_code")?).await
        }
        "case_act" => {
            let v = parse_body(payload)?;
            let case = field(&v, "case_id")?.to_string();
            intake.act_counted(caller, &case, &v).await
        }
        "case_list" => {
            let v = if payload.iter().all(u8::is_ascii_whitespace) { Value::Null } else { parse_body(payload)? };
            intake.case_list(caller, &v).await
        }
        "node_overview" => intake.overview(caller).await,
        "reception_publish" => intake.publish_reception(caller, &parse_body(payload)?).await,
        "reception_list" => intake.receptions().await,
        "campaign_list" => intake.campaign_list(caller).await,
        "city_figures" => crate::figures::city_view(intake, caller).await,
        "campaign_open" => intake.open_campaign(caller, &parse_body(payload)?).await,
        "reception_appointments" => {
            intake.appointments(caller, &take(&mut parse_body(payload)?, "reception_id")?).await
        }
        "reception_book" => {
            let mut v = parse_body(payload)?;
            let id = take(&mut v, "reception_id")?;
            intake.book(caller, &id, &v).await
        }
        "reception_record" => {
            let mut v = parse_body(payload)?;
            let (id, appointment) = (take(&mut v, "reception_id")?, take(&mut v, "appointment_id")?);
            intake.record_reception(caller, &id, &appointment, &v).await
        }
        "campaign_get" => intake.campaign_view(caller, &take(&mut parse_body(payload)?, "campaign_id")?).await,
        "campaign_mark" => {
            let mut v = parse_body(payload)?;
            let id = take(&mut v, "campaign_id")?;
            intake.mark_cases(caller, &id, &v).await
        }
        _ => Err(ApiError::general(ErrorCode::NotFound, "no such endpoint")),
    }
}
