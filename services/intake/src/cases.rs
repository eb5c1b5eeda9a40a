//! Existing cases: the staff view, the public status view (no personal data), and actions
//! checked against the state machine and appended with optimistic concurrency.

use serde_json::{json, Value};
use xinfang_shared::access::{self, Caller, Sight};
use xinfang_shared::action::{self, refusal_error};
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::event::Envelope;
use xinfang_shared::ids::CaseId;
use xinfang_shared::ledger::{AppendError, Expect, Stored};
use xinfang_shared::state::{self, CaseState};
use xinfang_shared::time::rfc3339;
use xinfang_shared::transfer::registered_of;

use crate::register::{query_code_matches, unavailable};
use crate::Intake;

/// How often an action reloads and retries after a concurrent write to the same case.
const MAX_CONFLICT_RETRIES: usize = 8;

fn parse_case_id(s: &str) -> Result<CaseId, ApiError> {
    CaseId::parse(s).map_err(|e| ApiError::field(ErrorCode::InvalidField, "case_id", e.0))
}

fn not_found(case: &str) -> ApiError {
    ApiError::general(ErrorCode::NotFound, format!("no case {case} at this node"))
}

impl Intake {
    pub(crate) async fn load(&self, case: &CaseId) -> Result<(Vec<Stored>, CaseState), ApiError> {
        let history = self.ledger.history(case).await.map_err(unavailable)?;
        let state = CaseState::fold(history.iter().map(|s| &s.event)).ok_or_else(|| not_found(case.as_str()))?;
        Ok((history, state))
    }

    fn dues(&self, events: &[Envelope], state: &CaseState) -> Value {
        let dues = xinfang_shared::dues::open_dues(events, state, &self.policy, &self.calendar.get());
        dues.into_iter()
            .map(|(step, d)| (step.to_string(), json!({"due_at": rfc3339(d.at), "provisional": d.provisional})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// The full case record for staff in whose scope it is (DESIGN.md §11); an auditor sees
    /// the petitioners masked.
    pub async fn case_view(&self, caller: &Caller, case_id: &str) -> Result<Value, ApiError> {
        let case = parse_case_id(case_id)?;
        caller.staff()?;
        let (history, state) = self.load(&case).await?;
        let sight = access::may_read(caller, case_id, state.organ.as_ref())?;
        let events: Vec<Envelope> = history.into_iter().map(|s| s.event).collect();
        let mut view = json!({
            "ok": true,
            "case_id": case,
            "state": state.stage.as_str(),
            "state_label": state.stage.label_zh(),
            "organ_id": state.organ,
            "declines": state.declines,
            "extended": state.extended,
            "leader": state.leader,
            "received_by": state.received_by,
            "due": self.dues(&events, &state),
            "actions": state::organ_actions(&state),
            "events": events,
        });
        match sight {
            Sight::Masked => access::mask_personal_data(&mut view),
            Sight::Full => self.audit.read(caller.staff()?, &case, "case_view").await?,
        }
        Ok(view)
    }

    /// The public status: the case id and query code give the stage, the timeline and the due
    /// dates — never names, ID numbers, phones, addresses or the content.
    pub async fn status_view(&self, case_id: &str, query_code: &str) -> Result<Value, ApiError> {
        let case = parse_case_id(case_id)?;
        let (history, state) = self.load(&case).await.map_err(|e| match e.code {
            ErrorCode::Unavailable => e,
            _ => not_found(case_id),
        })?;
        let events: Vec<Envelope> = history.into_iter().map(|s| s.event).collect();
        if !self.query_code_matches(&case, &events, query_code) {
            return Err(not_found(case_id));
        }
        let timeline: Vec<Value> = events
            .iter()
            .filter(|e| PUBLIC_TYPES.contains(&e.kind.as_str()))
            .map(|e| json!({"type": e.kind, "at": rfc3339(e.at), "label": public_label(&e.kind)}))
            .collect();
        Ok(json!({
            "ok": true,
            "case_id": case,
            "state": state.stage.as_str(),
            "state_label": state.stage.label_zh(),
            "registered_at": rfc3339(state.registered_at),
            "timeline": timeline,
            "due": self.dues(&events, &state),
            "actions": state::petitioner_actions(&state),
        }))
    }

    /// Applies an action to a case: allowed for the caller (DESIGN.md §11), checked against
    /// its state, appended only if no one else wrote to the case in between (else reload and
    /// decide again).
    pub async fn act(&self, caller: &Caller, case_id: &str, body: &Value) -> Result<Value, ApiError> {
        let case = parse_case_id(case_id)?;
        let request = action::parse(body, self.clock.now())?;
        let by_petitioner = request.action.by_petitioner();
        if *caller == Caller::Public && !by_petitioner {
            return Err(access::unauthorized("this action needs staff credentials (Authorization: Bearer …)"));
        }
        for _ in 0..MAX_CONFLICT_RETRIES {
            let (history, state) = self.load(&case).await?;
            let code_ok = *caller == Caller::Public && {
                let events: Vec<Envelope> = history.iter().map(|s| s.event.clone()).collect();
                body.get("query_code")
                    .and_then(Value::as_str)
                    .is_some_and(|c| self.query_code_matches(&case, &events, c))
            };
            let on =
                access::may_act(caller, case_id, state.organ.as_ref(), by_petitioner, request.actor.as_ref(), code_ok)?;
            // done now unless the client says when; never before the case's latest event, which
            // another service's clock may have stamped a little ahead of ours
            let at = request.at.unwrap_or_else(|| self.clock.now().max(state.last_at));
            let last_seq = history.last().map(|s| s.seq).unwrap_or(0);
            let data = state::decide(&state, &request.action, &on.actor, at, &self.calendar.get(), self.windows)
                .map_err(refusal_error)?;
            let event_id = ulid::Ulid::new().to_string();
            let mut first: Option<Envelope> = None;
            let mut stage = state.clone();
            for d in data {
                let (id, expect, cause) = match &first {
                    None => (event_id.clone(), Expect::LastSeq(last_seq), None),
                    Some(f) => {
                        let kind = d.kind();
                        (f.caused_id(&kind), Expect::Any, Some(f.event_id.clone()))
                    }
                };
                let mut event =
                    Envelope::new(id, case.clone(), self.ledger.node().clone(), at, on.actor.clone(), cause, d);
                event.recorded_by = on.recorded_by.clone();
                match self.ledger.append(&event, expect).await {
                    Ok(_) => {}
                    Err(AppendError::Conflict) if first.is_none() => {
                        self.metrics.conflicts.with_label_values(&["act"]).inc();
                        break;
                    }
                    Err(e) => return Err(unavailable(e)),
                }
                stage.apply(&event);
                if first.is_none() {
                    first = Some(event);
                }
            }
            if let Some(f) = first {
                return Ok(json!({"ok": true, "event_id": f.event_id, "state": stage.stage.as_str()}));
            }
        }
        Err(ApiError::general(ErrorCode::Conflict, "the case is being changed by others; reload and retry"))
    }
}

impl Intake {
    /// The open cases in the caller's scope (an organ: its own; the bureau and auditors: the
    /// node's), overdue first. `query`: `stage`, `organ_id`, `late` (overdue or warned only).
    pub async fn case_list(&self, caller: &Caller, query: &Value) -> Result<Value, ApiError> {
        let scope = access::list_scope(caller)?;
        let text = |k: &str| match query.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ApiError::field(ErrorCode::InvalidField, k, format!("{k} must be a string"))),
        };
        let stage = match text("stage")? {
            None => None,
            Some(s) => Some(
                serde_json::from_value::<state::Stage>(json!(s))
                    .map_err(|_| ApiError::field(ErrorCode::InvalidField, "stage", format!("unknown stage {s:?}")))?,
            ),
        };
        let organ = match text("organ_id")? {
            None => None,
            Some(o) => Some(
                xinfang_shared::ids::OrganId::parse(o)
                    .map_err(|e| ApiError::field(ErrorCode::InvalidField, "organ_id", e.0))?,
            ),
        };
        let late_only = match query.get("late") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => matches!(s.as_str(), "true" | "1" | "on"),
            Some(_) => return Err(ApiError::field(ErrorCode::InvalidField, "late", "late must be true or false")),
        };
        let filter = xinfang_shared::worklist::Filter { stage, organ, late_only };
        let (items, total) = crate::worklist::list(
            &self.worklist,
            &scope,
            &filter,
            &self.policy,
            &self.calendar.get(),
            self.clock.now(),
        )
        .map_err(unavailable)?;
        Ok(json!({"ok": true, "cases": items, "total": total}))
    }

    /// The node's overview (本级): counts by stage and organ, late cases, repeats.
    pub async fn overview(&self, caller: &Caller) -> Result<Value, ApiError> {
        access::may_overview(caller)?;
        crate::worklist::overview(&self.worklist, &self.policy, &self.calendar.get(), self.clock.now())
            .map_err(unavailable)
    }
}

/// Events the public may see in the timeline (their type and time only).
const PUBLIC_TYPES: &[&str] = &[
    "registered",
    "routed",
    "forwarded",
    "transferred_in",
    "accepted",
    "rejected",
    "extended",
    "replied",
    "evaluated",
    "review_requested",
    "review_replied",
    "rereview_requested",
    "rereview_replied",
    "hearing_started",
    "hearing_ended",
    "closed",
    "terminated",
    "appointment_booked",
    "reception_recorded",
];

fn public_label(kind: &str) -> &'static str {
    match kind {
        "registered" => "已登记",
        "routed" => "已转送有权处理机关",
        "forwarded" => "已转属地办理",
        "transferred_in" => "已接收",
        "accepted" => "已受理",
        "rejected" => "不予受理",
        "extended" => "办理期限已延长",
        "replied" => "已出具处理意见",
        "evaluated" => "已评价",
        "review_requested" => "已申请复查",
        "review_replied" => "已出具复查意见",
        "rereview_requested" => "已申请复核",
        "rereview_replied" => "已出具复核意见",
        "hearing_started" => "听证开始",
        "hearing_ended" => "听证结束",
        "closed" => "已办结",
        "terminated" => "已终结",
        "appointment_booked" => "已预约领导接访",
        "reception_recorded" => "领导接访已记录",
        _ => "",
    }
}

impl Intake {
    /// Does `code` (as the petitioner typed it) match the case's query code hash?
    pub(crate) fn query_code_matches(&self, case: &CaseId, events: &[Envelope], code: &str) -> bool {
        let code = code.trim().to_ascii_uppercase();
        registered_of(events).is_some_and(|r| query_code_matches(&self.keys, case, &code, &r.query_code_hash))
    }
}
