//! The due dates of a case's open steps (DOMAIN.md "Deadlines"), from its events: what the
//! staff and public views show. The deadlines service arms its timers from the same policy.

use std::collections::BTreeMap;

use crate::calendar::{Calendar, Due, Period};
use crate::config::Settings;
use crate::event::{Envelope, EscalationLevel, EventData};
use crate::state::{CaseState, Stage};
use crate::time::Instant;

/// The periods in force at a node: DOMAIN.md defaults with the node file's overrides.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub route: Period,
    pub objection: Period,
    pub acceptance: Period,
    pub handling: Period,
    pub review_window: Period,
    pub review: Period,
    pub rereview_window: Period,
    pub rereview: Period,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            route: Period::Days(15),
            objection: Period::WorkingDays(5),
            acceptance: Period::Days(15),
            handling: Period::Days(60),
            review_window: Period::Days(30),
            review: Period::Days(30),
            rereview_window: Period::Days(30),
            rereview: Period::Days(30),
        }
    }
}

impl Policy {
    /// The defaults overridden by `[deadlines.periods]`.
    pub fn from_settings(s: &Settings) -> Self {
        let d = Self::default();
        Self {
            route: s.period("route", d.route),
            objection: s.period("objection", d.objection),
            acceptance: s.period("acceptance", d.acceptance),
            handling: s.period("handling", d.handling),
            review_window: s.period("review_window", d.review_window),
            review: s.period("review", d.review),
            rereview_window: s.period("rereview_window", d.rereview_window),
            rereview: s.period("rereview", d.rereview),
        }
    }
}

/// Due dates of the steps open in `state`, keyed by step name.
pub fn open_dues(
    events: &[Envelope],
    state: &CaseState,
    policy: &Policy,
    cal: &Calendar,
) -> BTreeMap<&'static str, Due> {
    open_steps(events, state, policy, cal).into_iter().map(|(step, (_, due))| (step, due)).collect()
}

/// When the warning of a step falls due: at 80 % of the period or 3 days before its end,
/// whichever is later (DOMAIN.md "Warnings and supervision").
pub fn warn_at(start: Instant, due: Instant) -> Instant {
    let eighty = start + (due - start) * 4 / 5;
    eighty.max(due - chrono::Duration::days(3))
}

/// The steps open in `state`: step name → (start, due).
pub fn open_steps(
    events: &[Envelope],
    state: &CaseState,
    policy: &Policy,
    cal: &Calendar,
) -> BTreeMap<&'static str, (Instant, Due)> {
    let last = |kinds: &[&str]| events.iter().rev().find(|e| kinds.contains(&e.kind.as_str()));
    let mut dues = BTreeMap::new();
    match state.stage {
        Stage::AwaitingRoute => {
            let start = events.first().map(|e| match e.data() {
                Ok(Some(EventData::Registered(r))) => r.petition.received_at,
                _ => e.at,
            });
            if let Some(from) = start {
                dues.insert("route", (from, cal.due(from, policy.route)));
            }
        }
        Stage::WithOrgan => {
            if let Some(r) = last(&["routed"]) {
                dues.insert("objection", (r.at, cal.due(r.at, policy.objection)));
                dues.insert("acceptance", (r.at, cal.due(r.at, policy.acceptance)));
            }
        }
        Stage::Accepted => {
            if let Some(a) = last(&["accepted"]) {
                dues.insert("handling", (a.at, handling_due(events, a, policy, cal)));
            }
        }
        Stage::Replied => {
            if let Some(t) = state.opinion_at {
                dues.insert("review_window", (t, cal.due(t, policy.review_window)));
            }
        }
        Stage::ReviewRequested => {
            if let Some(r) = last(&["review_requested"]) {
                dues.insert("review", (r.at, cal.due(r.at, policy.review)));
            }
        }
        Stage::ReviewReplied => {
            if let Some(t) = state.opinion_at {
                dues.insert("rereview_window", (t, cal.due(t, policy.rereview_window)));
            }
        }
        // the re-review clock stops while a hearing (听证) runs (Art. 36): no timer during it,
        // and the due moves by the time every finished hearing took
        Stage::RereviewRequested => {
            if let Some((i, r)) = events.iter().enumerate().rev().find(|(_, e)| e.kind == "rereview_requested") {
                let due = cal.due(r.at, policy.rereview);
                let paused = hearing_time(&events[i + 1..]);
                dues.insert("rereview", (r.at, Due { at: due.at + paused, provisional: due.provisional }));
            }
        }
        _ => {}
    }
    if state.stage != Stage::Forwarded {
        reception_step(events, cal, &mut dues);
    }
    ladder_steps(events, state, &mut dues);
    dues
}

/// A booked reception whose record is not in yet: the bureau records it within one working
/// day after the slot ends (the earliest such slot, if several).
fn reception_step(events: &[Envelope], cal: &Calendar, dues: &mut BTreeMap<&'static str, (Instant, Due)>) {
    let recorded = |id: &str| {
        events.iter().any(|e| {
            matches!(e.data(), Ok(Some(EventData::ReceptionRecorded { appointment_id, .. })) if appointment_id == id)
        })
    };
    let open = events
        .iter()
        .filter_map(|e| match e.data() {
            Ok(Some(EventData::AppointmentBooked { appointment_id, ends_at, .. })) if !recorded(appointment_id) => {
                Some(*ends_at)
            }
            _ => None,
        })
        .min();
    if let Some(ends_at) = open {
        dues.insert("reception", (ends_at, cal.due(ends_at, Period::WorkingDays(1))));
    }
}

/// How long the finished hearings among `events` took.
fn hearing_time(events: &[Envelope]) -> chrono::Duration {
    let mut total = chrono::Duration::zero();
    let mut started = None;
    for e in events {
        match e.kind.as_str() {
            "hearing_started" => started = Some(e.at),
            "hearing_ended" => {
                if let Some(s) = started.take() {
                    total += (e.at - s).max(chrono::Duration::zero());
                }
            }
            _ => {}
        }
    }
    total
}

/// The steps the supervision ladder adds: a supervision (督办) lasts while the late step it
/// supervises is open; a directive (督办单) from the parent lasts until the organ's next
/// decision or the case ends.
fn ladder_steps(events: &[Envelope], state: &CaseState, dues: &mut BTreeMap<&'static str, (Instant, Due)>) {
    let supervision = events.iter().rev().find_map(|e| match e.data() {
        Ok(Some(EventData::Escalated { level: EscalationLevel::Supervision, due_at: Some(due), step, .. })) => {
            Some((e.at, *due, *step))
        }
        _ => None,
    });
    if let Some((start, due, Some(step))) = supervision {
        if dues.contains_key(step.name()) {
            dues.insert("supervision", (start, Due { at: due, provisional: false }));
        }
    }
    let open = !matches!(state.stage, Stage::Closed | Stage::Terminated | Stage::Forwarded);
    let directive = events.iter().enumerate().rev().find_map(|(i, e)| match e.data() {
        Ok(Some(EventData::DirectiveReceived { due_at, .. })) => Some((i, e.at, *due_at)),
        _ => None,
    });
    if let (Some((i, start, due)), true) = (directive, open) {
        const ANSWERS: &[&str] = &["accepted", "rejected", "replied", "review_replied", "rereview_replied"];
        if !events[i + 1..].iter().any(|e| ANSWERS.contains(&e.kind.as_str())) {
            dues.insert("directive", (start, Due { at: due, provisional: false }));
        }
    }
}

/// Handling: the assigned due of a 交办 case, else the period from acceptance, moved by an
/// extension counted from the end of the original period (Art. 34).
fn handling_due(events: &[Envelope], accepted: &Envelope, policy: &Policy, cal: &Calendar) -> Due {
    let assigned = events.iter().rev().find_map(|e| match e.data() {
        Ok(Some(EventData::Routed { assigned_due: Some(d), .. })) => Some(*d),
        _ => None,
    });
    let mut due = match assigned {
        Some(at) => Due { at, provisional: false },
        None => cal.due(accepted.at, policy.handling),
    };
    for e in events {
        if let Ok(Some(EventData::Extended { days, .. })) = e.data() {
            let ext = cal.due(due.at, Period::Days(*days));
            due = Due { at: ext.at, provisional: due.provisional || ext.provisional };
        }
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::reception::Leader;

    #[test]
    fn a_booked_reception_is_due_for_its_record_a_working_day_after_the_slot() {
        let registered = fixtures::registered("e0", fixtures::at(2, 9));
        let leader = Leader { name: "张明".into(), title: "区长".into() };
        // Friday 2026-03-06 09:00–11:00: recorded by the end of Monday 03-09
        let booked = fixtures::event(
            "e1",
            fixtures::at(3, 9),
            "intake",
            None,
            EventData::AppointmentBooked {
                reception_id: "R1".into(),
                appointment_id: "R1-001".into(),
                leader: leader.clone(),
                starts_at: fixtures::at(6, 9),
                ends_at: fixtures::at(6, 11),
                place: "接待大厅".into(),
            },
        );
        let mut events = vec![registered, booked];
        let cal = Calendar::shipped();
        let state = CaseState::fold(&events).unwrap();
        let dues = open_dues(&events, &state, &Policy::default(), &cal);
        assert_eq!(dues["reception"].at.date_naive().to_string(), "2026-03-09");
        events.push(fixtures::event(
            "e2",
            fixtures::at(6, 12),
            "bureau",
            None,
            EventData::ReceptionRecorded {
                reception_id: "R1".into(),
                appointment_id: "R1-001".into(),
                leader,
                attended: false,
                outcome: String::new(),
            },
        ));
        let state = CaseState::fold(&events).unwrap();
        assert!(!open_dues(&events, &state, &Policy::default(), &cal).contains_key("reception"));
    }
}
