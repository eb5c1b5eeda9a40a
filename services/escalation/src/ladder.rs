//! The child side: ledger events that put a case on a rung of the ladder become `escalated`
//! (and, for `parent`, a notice in the outbox to the parent node first). Both carry the rung's
//! id, derived from the cause; the case's history is looked at before acting, so a replay long
//! after the duplicate window still records nothing twice.

use serde_json::Value;
use xinfang_shared::calendar::{Calendar, LiveCalendar};
use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::escalation::{self, rung, Ladder, Notice, Rung};
use xinfang_shared::event::{self, until, Actor, Envelope, EscalationLevel};
use xinfang_shared::ids::NodeCode;
use xinfang_shared::ledger::{Expect, Ledger};
use xinfang_shared::state::CaseState;
use xinfang_shared::time::{now_cst, Instant};

use crate::metrics::Metrics;

/// The ledger event types that can put a case on a rung.
pub const TRIGGERS: &[&str] = &["deadline_warned", "deadline_breached", "registered", "forwarded"];

/// The child side's working parts.
pub struct Climb {
    pub ledger: Ledger,
    pub ladder: Ladder,
    pub calendar: LiveCalendar,
    pub metrics: Metrics,
}

impl Climb {
    /// Handles one trigger.
    pub async fn handle(&self, d: Delivery) -> Outcome {
        let case = d.event.case_id.clone();
        let all = match self.ledger.events(&case).await {
            Ok(all) => all,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let Some((r, events)) = owed(&d.event, &all, &self.ladder, &self.calendar.get()) else { return Outcome::Done };
        let now = now_cst();
        if r.level == EscalationLevel::Parent {
            if let Err(e) = self.notify_parent(&d.event, &r, events, now).await {
                return Outcome::Retry(e);
            }
        }
        let event = Envelope::new(
            r.id.clone(),
            case.clone(),
            self.ledger.node().clone(),
            now,
            Actor::system("escalation"),
            Some(d.event.event_id.clone()),
            r.data(),
        );
        match self.ledger.append(&event, Expect::Any).await {
            Ok(_) => {
                self.metrics.escalations.with_label_values(&[level_name(r.level)]).inc();
                tracing::info!(%case, level = level_name(r.level), to = %r.to, "escalated");
                Outcome::Done
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    async fn notify_parent(&self, cause: &Envelope, r: &Rung, events: &[Envelope], now: Instant) -> Result<(), String> {
        let parent = NodeCode::parse(&r.to).map_err(|e| e.to_string())?;
        let notice = Notice {
            level: r.level,
            step: r.step,
            reason: r.reason.clone(),
            snapshot: events.iter().map(|e| serde_json::to_value(e).unwrap_or(Value::Null)).collect(),
        };
        let message = Envelope {
            event_id: r.id.clone(),
            case_id: cause.case_id.clone(),
            kind: escalation::ESCALATION.into(),
            node: self.ledger.node().clone(),
            at: now,
            actor: Actor::system("escalation"),
            recorded_by: None,
            causation_id: Some(cause.event_id.clone()),
            data: serde_json::to_value(&notice).map_err(|e| e.to_string())?,
            typed: Default::default(),
        };
        self.ledger.send(&parent, escalation::ESCALATION, &message).await.map_err(|e| e.to_string())
    }
}

/// The rung `cause` puts the case on, with the case's events up to `cause`, unless the rung is
/// on record already (under its own id: other services answer the same events).
fn owed<'a>(cause: &Envelope, all: &'a [Envelope], ladder: &Ladder, cal: &Calendar) -> Option<(Rung, &'a [Envelope])> {
    let events = until(all, &cause.event_id);
    let state = CaseState::fold(events)?;
    let r = rung(cause, events, &state, ladder, cal)?;
    (!event::answered(all, &[&r.id])).then_some((r, events))
}

/// The wire name of a level.
pub fn level_name(level: EscalationLevel) -> &'static str {
    match level {
        EscalationLevel::Reminder => "reminder",
        EscalationLevel::Supervision => "supervision",
        EscalationLevel::Parent => "parent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xinfang_shared::calendar::Period;
    use xinfang_shared::event::{EventData, Step};
    use xinfang_shared::fixtures;
    use xinfang_shared::ids::OrganId;

    /// Issue 14: an answer of another service to the same warning must not stand for the
    /// reminder; only the reminder's own id does.
    #[test]
    fn another_services_answer_to_the_same_event_does_not_count() {
        let ladder = Ladder {
            supervision: Period::Days(10),
            parent: Some(NodeCode::parse("320200").unwrap()),
            bureau: OrganId::parse("320211-xfj").unwrap(),
        };
        let cal = Calendar::shipped();
        let registered = fixtures::registered("01REG", fixtures::at(2, 9));
        let routed = fixtures::routed(&registered, fixtures::at(2, 10));
        let warned = fixtures::event(
            "01WARN",
            fixtures::at(12, 10),
            "deadlines",
            None,
            EventData::DeadlineWarned { step: Step::Acceptance, due_at: fixtures::at(17, 23), provisional: false },
        );
        let foreign = fixtures::notified(&warned, "supervision_notice");
        let all = vec![registered, routed, warned.clone(), foreign];
        let (r, events) = owed(&warned, &all, &ladder, &cal).expect("the reminder is owed");
        assert_eq!((r.level, r.id.as_str(), events.len()), (EscalationLevel::Reminder, "01WARN:reminder", 3));
        let mut reminder = all[3].clone();
        reminder.event_id = r.id.clone();
        assert!(owed(&warned, &[all, vec![reminder]].concat(), &ladder, &cal).is_none(), "the reminder is on record");
    }
}
