//! The NATS service endpoints of the inbox (async-nats service API, queue group):
//! `xf.N.api.escalation.list` (a filter), `…get` / `…ack` (`{"id"}`), `…directive`
//! (`{"id","text","due_at"|"due_date"|"due_days"}`). Replies are the HTTP bodies.

use std::sync::Arc;

use serde_json::{json, Value};
use xinfang_shared::access::{self, Caller};
use xinfang_shared::endpoints::{self, Endpoint};
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::petition::parse_body;
use xinfang_shared::time::now_cst;
use xinfang_shared::{subjects, CancellationToken};

use crate::http::brief;
use crate::inbox::{Filter, Inbox};
use crate::request;

/// Starts the service and serves requests until `shutdown`; `registered` is told once every
/// endpoint is subscribed.
pub async fn serve(
    client: async_nats::Client,
    inbox: Arc<Inbox>,
    shutdown: CancellationToken,
    registered: tokio::sync::oneshot::Sender<()>,
) -> Result<(), String> {
    let node = inbox.ledger.node().clone();
    let endpoints = [
        ("escalation_list", "escalation.list"),
        ("escalation_get", "escalation.get"),
        ("escalation_ack", "escalation.ack"),
        ("escalation_directive", "escalation.directive"),
    ]
    .into_iter()
    .map(|(name, endpoint)| Endpoint { name, subject: subjects::api(&node, endpoint) })
    .collect();
    let description = format!("xinfang escalation inbox of node {node}");
    let group = format!("xf-escalation-{node}");
    endpoints::serve(
        client,
        "xinfang-escalation",
        description,
        group,
        endpoints,
        shutdown,
        registered,
        move |name, headers, payload| {
            let inbox = inbox.clone();
            async move {
                let handled = match inbox.gate.nats_caller(headers.as_ref()).await {
                    Ok(caller) => handle(&inbox, &caller, name, &payload).await,
                    Err(e) => Err(e),
                };
                handled.unwrap_or_else(|e| e.to_body())
            }
        },
    )
    .await
}

fn id(v: &Value) -> Result<&str, ApiError> {
    match v.get("id") {
        None | Some(Value::Null) => Err(ApiError::field(ErrorCode::MissingField, "id", "id is required")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::field(ErrorCode::InvalidField, "id", "id must be a string")),
    }
}

async fn handle(inbox: &Inbox, caller: &Caller, endpoint: &str, payload: &[u8]) -> Result<Value, ApiError> {
    match endpoint {
        "escalation_list" => access::may_read_escalations(caller).map(|_| ())?,
        "escalation_get" => {} // read_one decides how much the caller sees
        _ => access::may_direct(caller)?,
    }
    let v = if payload.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_body(payload)? };
    if !v.is_object() {
        return Err(ApiError::general(ErrorCode::InvalidJson, "the body must be a JSON object"));
    }
    match endpoint {
        "escalation_list" => {
            let f: Filter = serde_json::from_value(v)
                .map_err(|e| ApiError::general(ErrorCode::InvalidField, format!("bad filter: {e}")))?;
            f.check()?;
            let items: Vec<Value> = inbox.list(&f, now_cst()).iter().map(brief).collect();
            Ok(json!({"ok": true, "escalations": items}))
        }
        "escalation_get" => Ok(json!({"ok": true, "escalation": inbox.read_one(caller, id(&v)?).await?})),
        "escalation_ack" => {
            let view = inbox.acknowledge(id(&v)?, &request::by(&v)?).await?;
            Ok(json!({"ok": true, "escalation": brief(&view)}))
        }
        "escalation_directive" => {
            let req = request::directive(&v, &inbox.calendar.get(), now_cst())?;
            let (view, did) = inbox.direct(id(&v)?, req).await?;
            Ok(json!({"ok": true, "directive_id": did, "escalation": brief(&view)}))
        }
        _ => Err(ApiError::general(ErrorCode::NotFound, "no such endpoint")),
    }
}
