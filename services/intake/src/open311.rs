//! Open311 GeoReport v2 on intake (DESIGN.md §12), for 12345 hotline platforms and
//! third-party 311 clients (FixMyStreet …): `services`, `services/{code}`, `requests` (POST a
//! form with an `integration` token as `api_key`; GET with the spec's filters),
//! `requests/{id}`, `tokens/{token}`, each as `.json` or `.xml`. A request is located by
//! `address_id` (a division code) or by `lat`/`long` inside a `[[divisions]] area`. A created request is a §5
//! petition through the same validation, idempotency and ledger; its id is the case id.
//! Errors are the spec's `[{"code","description"}]` with 400 / 403 / 404.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use xinfang_shared::access::{Caller, Role};
use xinfang_shared::ids::CaseId;
use xinfang_shared::open311::{self, Open311Error};

use crate::Intake;

/// Requests one key may make at once, and per minute after that.
const KEY_BURST: u32 = 60;
const KEY_PER_MINUTE: u32 = 600;

/// The most requests one `GET requests` answers (the spec's default limit).
const LIST_LIMIT: usize = 1000;

/// The window `GET requests` covers when no `start_date` is given (the spec's 90 days).
const DEFAULT_WINDOW_DAYS: i64 = 90;

struct Open311 {
    intake: Arc<Intake>,
    per_key: DefaultKeyedRateLimiter<String>,
    /// The divisions' areas of the node file, for requests located by `lat`/`long`.
    areas: Vec<open311::Area>,
}

/// The areas of `[[divisions]] area`; a file that cannot be read or is not an area is an
/// error naming its key (intake does not start).
fn areas(settings: &xinfang_shared::config::Settings) -> Result<Vec<open311::Area>, String> {
    let mut out = Vec::new();
    for (i, d) in settings.divisions.iter().enumerate() {
        let Some(path) = &d.area else { continue };
        let key = format!("divisions[{i}].area");
        let text = std::fs::read_to_string(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
        out.push(open311::area_of_geojson(&d.code, &text).map_err(|e| format!("{key} {}: {e}", path.display()))?);
    }
    Ok(out)
}

/// The routes under `/open311/v2/`.
pub fn router(intake: Arc<Intake>) -> Result<Router, String> {
    let quota = Quota::per_minute(NonZeroU32::new(KEY_PER_MINUTE).expect("> 0"))
        .allow_burst(NonZeroU32::new(KEY_BURST).expect("> 0"));
    let areas = areas(&intake.settings)?;
    let state = Arc::new(Open311 { intake, per_key: RateLimiter::keyed(quota), areas });
    Ok(Router::new()
        .route("/open311/v2/{file}", get(top).post(create))
        .route("/open311/v2/services/{file}", get(service))
        .route("/open311/v2/requests/{file}", get(request))
        .route("/open311/v2/tokens/{file}", get(token))
        .with_state(state))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Xml,
}

/// `services.json` → (`services`, JSON); no or another extension → `None`.
fn split(file: &str) -> Option<(&str, Format)> {
    let (name, ext) = file.rsplit_once('.')?;
    match ext {
        "json" => Some((name, Format::Json)),
        "xml" => Some((name, Format::Xml)),
        _ => None,
    }
}

/// The array element names of the spec's XML.
fn item_of(list: &str) -> &str {
    match list {
        "services" => "service",
        "service_requests" => "request",
        "attributes" => "attribute",
        "values" => "value",
        "errors" => "error",
        "tokens" => "token",
        _ => "item",
    }
}

fn write(w: &mut quick_xml::Writer<Vec<u8>>, name: &str, v: &Value) {
    let _ = match v {
        Value::Null => w.write_event(Event::Empty(BytesStart::new(name))),
        Value::Array(items) => {
            let _ = w.write_event(Event::Start(BytesStart::new(name)));
            for x in items {
                write(w, item_of(name), x);
            }
            w.write_event(Event::End(BytesEnd::new(name)))
        }
        Value::Object(m) => {
            let _ = w.write_event(Event::Start(BytesStart::new(name)));
            for (k, x) in m {
                write(w, k, x);
            }
            w.write_event(Event::End(BytesEnd::new(name)))
        }
        scalar => {
            let text = match scalar {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = w.write_event(Event::Start(BytesStart::new(name)));
            let _ = w.write_event(Event::Text(BytesText::new(&text)));
            w.write_event(Event::End(BytesEnd::new(name)))
        }
    };
}

/// An answer in the asked format; `root` names the XML document element.
fn answer(status: StatusCode, format: Format, root: &str, v: &Value) -> Response {
    match format {
        Format::Json => (status, axum::Json(v.clone())).into_response(),
        Format::Xml => {
            let mut w = quick_xml::Writer::new(Vec::new());
            let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
            write(&mut w, root, v);
            let body = String::from_utf8(w.into_inner()).unwrap_or_default();
            (status, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
        }
    }
}

fn refuse(format: Format, e: Open311Error) -> Response {
    let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_REQUEST);
    answer(status, format, "errors", &json!([e]))
}

fn not_found(what: &str) -> Open311Error {
    Open311Error::new(404, what)
}

type Params = Query<Vec<(String, String)>>;

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
}

/// A `jurisdiction_id` other than this node's code is `404`.
fn jurisdiction(intake: &Intake, params: &[(String, String)]) -> Result<(), Open311Error> {
    match param(params, "jurisdiction_id") {
        Some(j) if j != intake.settings.node.code => {
            Err(not_found(&format!("jurisdiction_id: {j} is not served here")))
        }
        _ => Ok(()),
    }
}

/// What every read does first: the name and format of `file`, the jurisdiction checked, the
/// request counted against its address's rate limit; else the refusal to answer.
async fn admit<'f>(
    o: &Open311,
    file: &'f str,
    params: &[(String, String)],
    client: SocketAddr,
) -> Result<(&'f str, Format), Response> {
    let (name, format) = split(file).ok_or_else(|| refuse(Format::Json, not_found("use a .json or .xml path")))?;
    jurisdiction(&o.intake, params).map_err(|e| refuse(format, e))?;
    o.intake.gate.caller(None, Some(client.ip())).await.map_err(|e| refuse(format, open311::from_api(&e)))?;
    Ok((name, format))
}

/// `GET services.{fmt}` and `GET requests.{fmt}`.
async fn top(
    State(o): State<Arc<Open311>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    Query(params): Params,
) -> Response {
    let (name, format) = match admit(&o, &file, &params, client).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    match name {
        "services" => {
            let list = serde_json::to_value(open311::services(&o.intake.settings)).expect("serializes");
            answer(StatusCode::OK, format, "services", &list)
        }
        "requests" => match requests(&o.intake, &params).await {
            Ok(list) => answer(StatusCode::OK, format, "service_requests", &Value::Array(list)),
            Err(e) => refuse(format, e),
        },
        _ => refuse(format, not_found(&format!("{name}: no such resource"))),
    }
}

/// `GET services/{code}.{fmt}`: the service's attributes.
async fn service(
    State(o): State<Arc<Open311>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    Query(params): Params,
) -> Response {
    let (code, format) = match admit(&o, &file, &params, client).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    match open311::definition(&o.intake.settings, code) {
        Some(d) => answer(StatusCode::OK, format, "service_definition", &serde_json::to_value(d).expect("serializes")),
        None => refuse(format, not_found(&format!("service_code: no service {code}"))),
    }
}

/// One case as a service request.
async fn view(intake: &Intake, id: &str) -> Result<Value, Open311Error> {
    let missing = || not_found(&format!("service_request_id: no request {id}"));
    let case = CaseId::parse(id).map_err(|_| missing())?;
    let (history, _) = intake.load(&case).await.map_err(|e| match e.code {
        xinfang_shared::error::ErrorCode::Unavailable => open311::from_api(&e),
        _ => missing(),
    })?;
    let events: Vec<_> = history.into_iter().map(|s| s.event).collect();
    let item = xinfang_shared::worklist::item(&events, &intake.policy, &intake.calendar.get(), intake.clock.now())
        .ok_or_else(missing)?;
    Ok(open311::request_of(&item, &intake.settings))
}

/// `GET requests`: by `service_request_id` (comma-separated), else the node's requests
/// (open and closed) registered between `start_date` and `end_date` (RFC 3339; by the spec,
/// the 90 days up to `end_date`, which defaults to now), filtered by `service_code` and
/// `status`, newest first.
async fn requests(intake: &Intake, params: &[(String, String)]) -> Result<Vec<Value>, Open311Error> {
    if let Some(ids) = param(params, "service_request_id") {
        let mut out = Vec::new();
        for id in ids.split(',').map(str::trim).filter(|s| !s.is_empty()).take(LIST_LIMIT) {
            match view(intake, id).await {
                Ok(v) => out.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(out);
    }
    let date = |key: &str| -> Result<Option<xinfang_shared::time::Instant>, Open311Error> {
        param(params, key)
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s).map_err(|_| {
                    Open311Error::new(400, format!("{key}: a w3 date-time such as 2026-12-01T00:00:00+08:00"))
                })
            })
            .transpose()
    };
    let now = intake.clock.now();
    let end = date("end_date")?.unwrap_or(now);
    let start = date("start_date")?.unwrap_or(end - chrono::Duration::days(DEFAULT_WINDOW_DAYS));
    if start > end {
        return Err(Open311Error::new(400, "start_date: after end_date"));
    }
    let statuses: Vec<&str> =
        param(params, "status").map(|s| s.split(',').map(str::trim).collect()).unwrap_or_default();
    if let Some(bad) = statuses.iter().find(|s| !["open", "closed"].contains(s)) {
        return Err(Open311Error::new(400, format!("status: {bad} is not open or closed")));
    }
    let code = param(params, "service_code");
    let items = crate::worklist::registered_between(
        &intake.worklist,
        (start, end),
        &intake.policy,
        &intake.calendar.get(),
        now,
    )
    .map_err(|e| open311::from_api(&crate::register::unavailable(e)))?;
    Ok(items
        .into_iter()
        .filter(|i| code.is_none_or(|c| c == i.category))
        .filter(|i| statuses.is_empty() || statuses.contains(&open311::status(i.stage)))
        .take(LIST_LIMIT)
        .map(|i| open311::request_of(&i, &intake.settings))
        .collect())
}

/// `GET requests/{id}.{fmt}`.
async fn request(
    State(o): State<Arc<Open311>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    Query(params): Params,
) -> Response {
    let (id, format) = match admit(&o, &file, &params, client).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    match view(&o.intake, id).await {
        Ok(v) => answer(StatusCode::OK, format, "service_requests", &json!([v])),
        Err(e) => refuse(format, e),
    }
}

/// `GET tokens/{token}.{fmt}`: requests are created at once, so a token is the request id.
async fn token(
    State(o): State<Arc<Open311>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    Query(params): Params,
) -> Response {
    let (token, format) = match admit(&o, &file, &params, client).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    match view(&o.intake, token).await {
        Ok(_) => {
            answer(StatusCode::OK, format, "service_requests", &json!([{"service_request_id": token, "token": token}]))
        }
        Err(e) => refuse(format, e),
    }
}

/// `POST requests.{fmt}`: the form as a petition on the key's channel. The same form sent
/// again (a client's retry) gets the same request back.
async fn create(
    State(o): State<Arc<Open311>>,
    Path(file): Path<String>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(("requests", format)) = split(&file) else {
        return refuse(Format::Json, not_found(&format!("{file}: no such resource")));
    };
    let Ok(Form(form)) = form else {
        return refuse(format, Open311Error::new(400, "the body must be application/x-www-form-urlencoded"));
    };
    match submit(&o, &form).await {
        Ok(v) => answer(StatusCode::CREATED, format, "service_requests", &json!([v])),
        Err(e) => refuse(format, e),
    }
}

async fn submit(o: &Open311, form: &[(String, String)]) -> Result<Value, Open311Error> {
    let intake = &o.intake;
    let key = param(form, "api_key").ok_or_else(|| Open311Error::new(403, "api_key: required"))?;
    let identity =
        intake.gate.credentials.token(key).ok_or_else(|| Open311Error::new(403, "api_key: not valid"))?.clone();
    let channel = match identity.channel {
        Some(c) if identity.has(Role::Integration) => c,
        _ => return Err(Open311Error::new(403, "api_key: not an integration key with a channel")),
    };
    if o.per_key.check_key(&identity.name).is_err() {
        return Err(Open311Error::new(429, "too many requests for this api_key; please wait a minute"));
    }
    jurisdiction(intake, form)?;
    let code = param(form, "service_code").ok_or_else(|| Open311Error::new(400, "service_code: required"))?;
    if open311::definition(&intake.settings, code).is_none() {
        return Err(not_found(&format!("service_code: no service {code}")));
    }
    let mut form = form.to_vec();
    open311::locate(&mut form, &o.areas)?;
    let mut petition = open311::petition_of_form(&form)?;
    petition["channel"] = json!(channel.as_str());
    // a retry of the same form by the same key is the same petition
    let mut fields: Vec<&(String, String)> = form.iter().filter(|(k, _)| k != "api_key").collect();
    // (sorted, so the same fields in another order are the same form)
    fields.sort();
    let digest = Sha256::digest(format!("{}\n{fields:?}", identity.name).as_bytes());
    petition["idempotency_key"] = json!(format!("open311-{}", hex::encode(&digest[..16])));
    let body = serde_json::to_vec(&petition).expect("serializes");
    let caller = Caller::Staff(identity);
    let submitted = intake.submit_counted(&caller, &body).await.map_err(|e| open311::from_api(&e))?;
    let r = submitted.receipt;
    Ok(json!({
        "service_request_id": r.case_id,
        "service_notice": open311::receipt_notice(r.case_id.as_str(), &r.query_code),
        "account_id": null,
    }))
}
