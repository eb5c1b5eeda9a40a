//! The supervision ladder (督办, DOMAIN.md "Warnings and supervision", Arts. 25, 40, 43–45) as
//! pure code: which rung an event puts a case on, and the messages that carry an escalation to
//! the parent node's joint-meeting office (联席会议办公室) and its answers back down.
//!
//! - a warning of an organ's step → `reminder` to the organ;
//! - a breach of an organ's step → `supervision` (督办) by the node's petition bureau, due in
//!   the supervision period (default 10 days);
//! - a breach of the bureau's own routing, of a supervision or of a directive, an urgent or
//!   group case (Art. 25), or a jurisdiction dispute between nodes (Art. 24) → `parent`.
//!
//! Every rung's id is derived from its cause, so it is appended once however often the cause
//! is replayed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::calendar::{Calendar, Period};
use crate::config::Settings;
use crate::event::{Envelope, EscalationLevel, EventData, Step};
use crate::ids::{NodeCode, OrganId};
use crate::state::CaseState;
use crate::time::Instant;

/// `kind` of the cross-node messages (`xf.<from>.out.<to>.<kind>`).
pub const ESCALATION: &str = "escalation";
/// The parent acknowledged an escalation.
pub const ACK: &str = "ack";
/// The parent answered with a directive (督办单).
pub const DIRECTIVE: &str = "directive";

/// The ladder in force at a node.
#[derive(Debug, Clone)]
pub struct Ladder {
    /// Supervision due, counted from the breach (`[deadlines.periods] supervision`).
    pub supervision: Period,
    /// The node's parent, if any (the city has none in a city deployment).
    pub parent: Option<NodeCode>,
    /// The node's petition bureau (信访局), which supervises.
    pub bureau: OrganId,
}

impl Ladder {
    /// The ladder of the node file (checked settings: exactly one bureau).
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            supervision: s.period("supervision", Period::Days(10)),
            parent: s.node.parent.as_deref().and_then(|p| NodeCode::parse(p).ok()),
            bureau: s
                .organs
                .iter()
                .find(|o| o.role == crate::config::OrganRole::PetitionBureau)
                .and_then(|o| OrganId::parse(&o.id).ok())
                .unwrap_or_else(|| OrganId::parse(&format!("{}-xfj", s.node.code)).expect("valid organ id")),
        }
    }
}

/// One rung to record: `escalated` with this id (and, for `parent`, the message to the parent).
#[derive(Debug, Clone, PartialEq)]
pub struct Rung {
    pub id: String,
    pub level: EscalationLevel,
    /// Organ id (reminder, supervision) or parent node code (parent).
    pub to: String,
    pub due_at: Option<Instant>,
    pub step: Option<Step>,
    pub reason: String,
}

impl Rung {
    /// The `escalated` data.
    pub fn data(&self) -> EventData {
        EventData::Escalated {
            level: self.level,
            to: self.to.clone(),
            due_at: self.due_at,
            step: self.step,
            reason: self.reason.clone(),
        }
    }
}

/// Steps an organ (or the bureau) owes; the petitioner's windows and the organ's right to
/// object are not obligations and climb no ladder.
fn owed(step: Step) -> bool {
    !matches!(step, Step::Objection | Step::ReviewWindow | Step::RereviewWindow)
}

fn step_label(step: Step) -> &'static str {
    match step {
        Step::Route => "登记转送交办",
        Step::Objection => "管辖异议",
        Step::Acceptance => "受理告知",
        Step::Handling => "办理",
        Step::ReviewWindow => "复查申请期",
        Step::Review => "复查",
        Step::RereviewWindow => "复核申请期",
        Step::Rereview => "复核",
        Step::Supervision => "督办",
        Step::Directive => "上级督办单",
        Step::Reception => "领导接访记录",
    }
}

/// The rung `cause` (an event of the case, the last of `events`) puts the case on, if any.
pub fn rung(cause: &Envelope, events: &[Envelope], state: &CaseState, ladder: &Ladder, cal: &Calendar) -> Option<Rung> {
    let id = |level: &str| cause.caused_id(level);
    let organ = state.organ.as_ref().map(|o| o.to_string()).unwrap_or_else(|| ladder.bureau.to_string());
    let parent = |reason: String, step: Option<Step>| {
        ladder.parent.as_ref().map(|p| Rung {
            id: id("parent"),
            level: EscalationLevel::Parent,
            to: p.to_string(),
            due_at: None,
            step,
            reason,
        })
    };
    match cause.data().ok()??.clone() {
        EventData::DeadlineWarned { step, due_at, .. } if owed(step) => Some(Rung {
            id: id("reminder"),
            level: EscalationLevel::Reminder,
            to: if step.owed_by_bureau() { ladder.bureau.to_string() } else { organ },
            due_at: Some(due_at),
            step: Some(step),
            reason: format!("{}期限将至（{}），请抓紧办理", step_label(step), due_at.format("%Y-%m-%d %H:%M")),
        }),
        EventData::DeadlineBreached { step: step @ (Step::Route | Step::Supervision | Step::Directive), .. } => {
            parent(format!("{}逾期未办结，报上级联席会议办公室", step_label(step)), Some(step))
        }
        EventData::DeadlineBreached { step, due_at, .. } if owed(step) => Some(Rung {
            id: id("supervision"),
            level: EscalationLevel::Supervision,
            to: ladder.bureau.to_string(),
            due_at: Some(cal.due(cause.at, ladder.supervision).at),
            step: Some(step),
            reason: format!(
                "{}已逾期（应于 {} 前办结），由{}督办",
                step_label(step),
                due_at.format("%Y-%m-%d %H:%M"),
                ladder.bureau
            ),
        }),
        EventData::Registered(r) if r.group || r.urgent => {
            let why = if r.group { "集体访（5人以上）".to_string() } else { "紧急信访事项".to_string() };
            let reasons = if r.urgent_reasons.is_empty() {
                String::new()
            } else {
                format!("：{}", r.urgent_reasons.join("、"))
            };
            parent(format!("{why}{reasons}，依第二十五条即报上一级"), None)
        }
        EventData::Forwarded { to_node, reason } if Some(&to_node) == ladder.parent.as_ref() && disputed(events) => {
            parent(format!("跨节点管辖争议：{reason}"), None)
        }
        _ => None,
    }
}

/// The case came here from another node and is sent up while still being routed: the nodes
/// dispute it (Art. 24). A review request sent up to the organ one level above is no dispute.
fn disputed(events: &[Envelope]) -> bool {
    match events.iter().rposition(|e| e.kind == "transferred_in") {
        Some(i) => !events[i..].iter().any(|e| matches!(e.kind.as_str(), "review_requested" | "rereview_requested")),
        None => false,
    }
}

/// The escalation a child sends its parent (`xf.<child>.out.<parent>.escalation`), in an
/// envelope whose id is the rung's id and whose case is the child's case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub level: EscalationLevel,
    #[serde(default)]
    pub step: Option<Step>,
    pub reason: String,
    /// The case's events so far at the child, as written there.
    pub snapshot: Vec<Value>,
}

/// The parent's acknowledgement (`xf.<parent>.out.<child>.ack`); envelope id `<escalation_id>:ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub escalation_id: String,
    pub by: String,
}

/// The parent's directive (督办单, `xf.<parent>.out.<child>.directive`); envelope id is the
/// directive id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directive {
    pub escalation_id: String,
    pub text: String,
    pub due_at: Instant,
    pub by: String,
}

/// A directive's id: derived from what it says, so a form sent twice is one directive.
pub fn directive_id(escalation_id: &str, text: &str, due_at: Instant) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{text}\u{0}{}", due_at.timestamp()).as_bytes());
    format!("{escalation_id}:directive:{}", hex::encode(&h[..6]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Actor;
    use crate::ids::CaseId;
    use crate::time::cst;
    use chrono::TimeZone;

    fn ladder() -> Ladder {
        Ladder {
            supervision: Period::Days(10),
            parent: Some(NodeCode::parse("320200").unwrap()),
            bureau: OrganId::parse("320211-xfj").unwrap(),
        }
    }

    fn at(d: u32) -> Instant {
        cst().with_ymd_and_hms(2026, 3, d, 10, 0, 0).unwrap()
    }

    fn ev(id: &str, d: u32, data: EventData) -> Envelope {
        Envelope::new(
            id,
            CaseId::parse("320211-20260301-000001").unwrap(),
            NodeCode::parse("320211").unwrap(),
            at(d),
            Actor::system("test"),
            None,
            data,
        )
    }

    fn state(organ: Option<&str>) -> CaseState {
        CaseState {
            case_id: CaseId::parse("320211-20260301-000001").unwrap(),
            stage: crate::state::Stage::WithOrgan,
            organ: organ.map(|o| OrganId::parse(o).unwrap()),
            declines: 0,
            extended: false,
            evaluated: false,
            opinion_at: None,
            last_at: at(1),
            registered_at: at(1),
            leader: None,
            received_by: None,
        }
    }

    #[test]
    fn warning_reminds_the_organ_and_breach_puts_it_under_supervision() {
        let cal = Calendar::shipped();
        let s = state(Some("320211-zjj"));
        let w = ev("w1", 10, EventData::DeadlineWarned { step: Step::Acceptance, due_at: at(16), provisional: false });
        let r = rung(&w, std::slice::from_ref(&w), &s, &ladder(), &cal).unwrap();
        assert_eq!((r.level, r.to.as_str(), r.id.as_str()), (EscalationLevel::Reminder, "320211-zjj", "w1:reminder"));
        let b =
            ev("b1", 16, EventData::DeadlineBreached { step: Step::Acceptance, due_at: at(16), provisional: false });
        let r = rung(&b, std::slice::from_ref(&b), &s, &ladder(), &cal).unwrap();
        assert_eq!((r.level, r.to.as_str()), (EscalationLevel::Supervision, "320211-xfj"));
        assert_eq!(r.due_at.unwrap(), cst().with_ymd_and_hms(2026, 3, 26, 23, 59, 59).unwrap());
        assert_eq!(r.step, Some(Step::Acceptance));
    }

    #[test]
    fn overdue_supervision_goes_to_the_parent_and_windows_climb_nothing() {
        let cal = Calendar::shipped();
        let s = state(Some("320211-zjj"));
        let b =
            ev("b2", 20, EventData::DeadlineBreached { step: Step::Supervision, due_at: at(20), provisional: false });
        let r = rung(&b, std::slice::from_ref(&b), &s, &ladder(), &cal).unwrap();
        assert_eq!((r.level, r.to.as_str(), r.id.as_str()), (EscalationLevel::Parent, "320200", "b2:parent"));
        for step in [Step::ReviewWindow, Step::RereviewWindow, Step::Objection] {
            let b = ev("b3", 20, EventData::DeadlineBreached { step, due_at: at(20), provisional: false });
            assert_eq!(rung(&b, std::slice::from_ref(&b), &s, &ladder(), &cal), None, "{step:?}");
            let w = ev("w3", 20, EventData::DeadlineWarned { step, due_at: at(20), provisional: false });
            assert_eq!(rung(&w, std::slice::from_ref(&w), &s, &ladder(), &cal), None, "{step:?}");
        }
        let top = Ladder { parent: None, ..ladder() };
        let b =
            ev("b4", 20, EventData::DeadlineBreached { step: Step::Supervision, due_at: at(20), provisional: false });
        assert_eq!(rung(&b, std::slice::from_ref(&b), &s, &top, &cal), None, "the top node has no parent");
    }

    #[test]
    fn a_dispute_forwarded_up_is_escalated_but_a_plain_forward_is_not() {
        let cal = Calendar::shipped();
        let s = state(None);
        let up = EventData::Forwarded { to_node: NodeCode::parse("320200").unwrap(), reason: "争议".into() };
        let f = ev("f1", 3, up.clone());
        assert_eq!(rung(&f, std::slice::from_ref(&f), &s, &ladder(), &cal), None);
        let t = ev(
            "t1",
            2,
            EventData::TransferredIn {
                from_node: NodeCode::parse("320213").unwrap(),
                snapshot: vec![],
                organ_id: None,
            },
        );
        let r = rung(&f, &[t.clone(), f.clone()], &s, &ladder(), &cal).unwrap();
        assert_eq!((r.level, r.id.as_str()), (EscalationLevel::Parent, "f1:parent"));
        // a review request sent up after a transfer is no dispute
        let asked = ev("q1", 3, EventData::ReviewRequested { reason: String::new() });
        assert_eq!(rung(&f, &[t, asked, f.clone()], &s, &ladder(), &cal), None);
    }

    #[test]
    fn directive_ids_follow_their_content() {
        let a = directive_id("e1", "请于月底前办结", at(20));
        assert_eq!(a, directive_id("e1", "请于月底前办结", at(20)));
        assert_ne!(a, directive_id("e1", "请于月底前办结", at(21)));
        assert_ne!(a, directive_id("e2", "请于月底前办结", at(20)));
        assert!(a.starts_with("e1:directive:"));
    }
}
