//! Parsing a case action request (`POST /v1/cases/{id}/actions`, `xf.N.api.case.act`) into
//! an [`Action`], its actor and its optional effective time, with wire errors per field.

use chrono::DateTime;
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::event::{Actor, ActorKind, Outcome, RejectReason, Satisfaction};
use crate::ids::OrganId;
use crate::petition::{Obj, CLOCK_SKEW_SECS};
use crate::state::{check_extension, Action, Refusal};
use crate::time::{to_cst, Instant};

/// A parsed action request.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRequest {
    pub action: Action,
    /// The `actor` the body names, if any; who is on record is for [`crate::access::may_act`].
    pub actor: Option<Actor>,
    /// When it was done, if on paper before now (never in the future).
    pub at: Option<Instant>,
}

const COMMON: &[&str] = &["action", "actor", "at", "case_id", "query_code"];

fn fields(name: &str) -> &'static [&'static str] {
    match name {
        "reject" => &["reason_code", "note"],
        "decline_jurisdiction" => &["suggested_organ_id", "note"],
        "extend" => &["days", "reason", "approved_by"],
        "reply" | "review_reply" | "rereview_reply" => &["outcome", "summary"],
        "evaluate" => &["satisfaction"],
        "request_review" | "request_rereview" | "withdraw" => &["reason"],
        "accept" | "hearing_start" | "hearing_end" => &["note"],
        "take_charge" => &["leader"],
        "release_charge" => &["reason"],
        _ => &[],
    }
}

fn serde_enum<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(Value::String(s.to_string())).ok()
}

/// Parses an action request body at time `now`.
pub fn parse(value: &Value, now: Instant) -> Result<ActionRequest, ApiError> {
    let obj = Obj::root(value)?;
    let name =
        obj.enumeration("action", |s| Action::NAMES.iter().find(|n| **n == s).copied(), &Action::NAMES.join(", "))?;
    let allowed: Vec<&str> = COMMON.iter().chain(fields(name)).copied().collect();
    obj.only(&allowed)?;
    let actor = match obj.get("actor") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<Actor>(v.clone())
                .map_err(|_| obj.invalid("actor", "must be {\"kind\": \"organ|staff|petitioner\", \"id\": \"…\"}"))?,
        ),
    };
    if let Some(actor) = &actor {
        if actor.id.trim().is_empty() || actor.id.len() > 64 {
            return Err(ApiError::field(ErrorCode::InvalidField, "actor.id", "must be 1–64 characters"));
        }
        if actor.kind == ActorKind::System {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "actor.kind",
                "system is not an actor for case actions",
            ));
        }
    }
    let at = match obj.opt_str("at", 64)? {
        None => None,
        Some(s) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|_| obj.invalid("at", "must be an RFC 3339 time with offset"))?;
            if t > now + chrono::Duration::seconds(CLOCK_SKEW_SECS) {
                return Err(obj.invalid("at", "must not be in the future"));
            }
            Some(to_cst(t))
        }
    };
    let text = |key: &str| -> Result<String, ApiError> { Ok(obj.opt_str(key, 2000)?.unwrap_or_default().to_string()) };
    let outcome =
        || obj.enumeration("outcome", serde_enum::<Outcome>, "supported, partly_supported, not_supported, explained");
    let action = match name {
        "accept" => Action::Accept,
        "reject" => Action::Reject {
            reason_code: obj.enumeration(
                "reason_code",
                serde_enum::<RejectReason>,
                "litigation_channel, same_matter_in_progress, terminated_matter, not_a_petition, other",
            )?,
            note: text("note")?,
        },
        "decline_jurisdiction" => Action::DeclineJurisdiction {
            suggested_organ_id: obj.opt_parse("suggested_organ_id", OrganId::parse)?,
            note: text("note")?,
        },
        "extend" => {
            let days = obj
                .get("days")
                .ok_or_else(|| obj.missing("days"))?
                .as_u64()
                .filter(|d| *d <= u64::from(u32::MAX))
                .ok_or_else(|| obj.invalid("days", "must be a whole number of days"))? as u32;
            let reason = obj.req_str("reason", 2000)?.to_string();
            let approved_by = obj.req_str("approved_by", 64)?.to_string();
            check_extension(days, &reason, &approved_by).map_err(refusal_error)?;
            Action::Extend { days, reason, approved_by }
        }
        "reply" => Action::Reply { outcome: outcome()?, summary: obj.req_str("summary", 5000)?.to_string() },
        "review_reply" => {
            Action::ReplyReview { outcome: outcome()?, summary: obj.req_str("summary", 5000)?.to_string() }
        }
        "rereview_reply" => {
            Action::ReplyRereview { outcome: outcome()?, summary: obj.req_str("summary", 5000)?.to_string() }
        }
        "evaluate" => Action::Evaluate {
            satisfaction: obj.enumeration(
                "satisfaction",
                serde_enum::<Satisfaction>,
                "satisfied, basically_satisfied, unsatisfied",
            )?,
        },
        "request_review" => Action::RequestReview { reason: text("reason")? },
        "request_rereview" => Action::RequestRereview { reason: text("reason")? },
        "hearing_start" => Action::StartHearing,
        "hearing_end" => Action::EndHearing,
        "withdraw" => Action::Withdraw { reason: text("reason")? },
        "take_charge" => Action::TakeCharge { leader: crate::reception::Leader::parse(&obj, "leader")? },
        "release_charge" => Action::ReleaseCharge { reason: text("reason")? },
        other => unreachable!("action {other} is in NAMES"),
    };
    Ok(ActionRequest { action, actor, at })
}

/// The wire error for a refusal by the state machine.
pub fn refusal_error(r: Refusal) -> ApiError {
    match r {
        Refusal::InvalidTransition { .. } => ApiError::general(ErrorCode::InvalidTransition, r.to_string()),
        Refusal::InvalidField { field, ref message } => {
            ApiError::field(ErrorCode::InvalidField, field, message.clone())
        }
        Refusal::Unauthorized(_) => ApiError::general(ErrorCode::Forbidden, r.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::cst;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> Instant {
        cst().with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap()
    }

    fn err(v: Value) -> (ErrorCode, Option<String>) {
        let e = parse(&v, now()).unwrap_err();
        (e.code, e.field)
    }

    #[test]
    fn parses_actions_and_refuses_bad_fields() {
        let org = json!({"kind": "organ", "id": "320211-zjj"});
        let r =
            parse(&json!({"action": "reply", "actor": org, "outcome": "supported", "summary": "已修"}), now()).unwrap();
        assert_eq!(r.action, Action::Reply { outcome: Outcome::Supported, summary: "已修".into() });
        use ErrorCode::*;
        let f = |s: &str| Some(s.to_string());
        assert_eq!(err(json!({"action": "fly", "actor": org})), (InvalidField, f("action")));
        assert_eq!(err(json!({"actor": org})), (MissingField, f("action")));
        assert_eq!(parse(&json!({"action": "accept"}), now()).unwrap().actor, None);
        assert_eq!(err(json!({"action": "accept", "actor": {"kind": "king", "id": "x"}})), (InvalidField, f("actor")));
        assert_eq!(err(json!({"action": "accept", "actor": org, "days": 3})), (InvalidField, f("days")));
        assert_eq!(
            err(json!({"action": "extend", "actor": org, "days": 45, "reason": "r", "approved_by": "a"})),
            (InvalidField, f("days"))
        );
        assert_eq!(
            err(json!({"action": "extend", "actor": org, "days": "5", "reason": "r", "approved_by": "a"})),
            (InvalidField, f("days"))
        );
        assert_eq!(
            err(json!({"action": "reject", "actor": org, "reason_code": "boredom"})),
            (InvalidField, f("reason_code"))
        );
        assert_eq!(
            err(json!({"action": "accept", "actor": org, "at": "2026-12-01T00:00:00+08:00"})),
            (InvalidField, f("at"))
        );
        assert_eq!(err(json!({"action": "reply", "actor": org, "outcome": "supported"})), (MissingField, f("summary")));
    }
}
