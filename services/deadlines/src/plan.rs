//! What reconciling a case's timers with its events changes, decided from the case's armed
//! records and events alone (no I/O): the live consumer reads the records from the store and
//! writes the plan back; a rebuild keeps a case's records in memory through all its events and
//! writes only the last state ([`crate::rebuild`]).

use xinfang_shared::calendar::{Calendar, Due as StepDue};
use xinfang_shared::dues::{open_steps, warn_at, Policy};
use xinfang_shared::event::{self, Envelope, Step};
use xinfang_shared::ids::CaseId;
use xinfang_shared::indicators::{self, Observation};
use xinfang_shared::state::CaseState;
use xinfang_shared::time::Instant;

use crate::timers::{firing_id, Armed, Kind};

/// What a reconcile is the effect of.
#[derive(Debug, Clone, Copy)]
pub enum Cause {
    /// A delivered ledger event, at this stream sequence.
    Event(u64),
    /// A new holiday calendar.
    Calendar,
    /// The replay of a store being rebuilt.
    Rebuild,
}

/// The rules a plan is made by.
pub struct Rules<'a> {
    pub policy: &'a Policy,
    pub calendar: &'a Calendar,
}

/// The changes to one case's timers.
#[derive(Debug, Default)]
pub struct Plan {
    /// Records that stay as they are.
    pub kept: Vec<(Step, Armed)>,
    /// Records of steps that closed or moved: removed.
    pub forgotten: Vec<(Step, Armed)>,
    /// Of those, steps that closed after their due with no breach on record: it is owed now.
    pub breached_late: Vec<(Step, Armed)>,
    /// Records written: steps newly open, or open with another due.
    pub armed: Vec<(Step, Armed)>,
    /// Provisional dues a new calendar moved: the step, its due before, after.
    pub moved: Vec<(Step, Instant, StepDue)>,
    /// What the event adds to the indicator counts.
    pub observed: Option<Observation>,
    /// The organ holding the case.
    pub organ: Option<String>,
}

/// Makes the case's timers (`current`, its armed records) those of its open steps as of
/// `events` at time `at`. A warning or breach already in the case's ledger (`all`, later events
/// included) is marked out, not armed again: a store rebuilt from the ledger must not fire
/// twice what fired before it was lost. `None`: the events hold no case yet.
pub fn plan(
    rules: &Rules,
    case: &CaseId,
    current: &[(Step, Armed)],
    events: &[Envelope],
    all: &[Envelope],
    at: Instant,
    cause: Cause,
) -> Option<Plan> {
    let state = CaseState::fold(events)?;
    let want = open_steps(events, &state, rules.policy, rules.calendar);
    let mut plan = Plan { organ: state.organ.as_ref().map(|o| o.to_string()), ..Plan::default() };
    for (step, armed) in current {
        let wanted = want.get(step.name());
        if wanted.is_some_and(|(_, due)| due.at == armed.due_at) {
            plan.kept.push((*step, armed.clone()));
            continue;
        }
        if let (Some((_, due)), Cause::Calendar, true) = (wanted, cause, armed.provisional) {
            plan.moved.push((*step, armed.due_at, *due));
        }
        // one that completed after its due and whose breach has not fired yet still gets it
        if wanted.is_none() && armed.due_at < at && !armed.breached {
            plan.breached_late.push((*step, armed.clone()));
        }
        plan.forgotten.push((*step, armed.clone()));
    }
    for (name, (start, due)) in &want {
        let Some(step) = Step::ALL.into_iter().find(|s| s.name() == *name) else { continue };
        if current.iter().any(|(s, a)| *s == step && a.due_at == due.at) {
            continue;
        }
        let mut armed = Armed::new(due.at, warn_at(*start, due.at), due.provisional, plan.organ.clone());
        armed.warned = fired(all, case, step, armed.due_at, Kind::Warned);
        armed.breached = fired(all, case, step, armed.due_at, Kind::Breached);
        plan.armed.push((step, armed));
    }
    plan.observed = match (cause, events.split_last()) {
        (Cause::Event(_) | Cause::Rebuild, Some((event, before))) => {
            indicators::observe(before, event, rules.policy, rules.calendar)
        }
        _ => None,
    };
    Some(plan)
}

/// Whether the case's events already hold the warning or breach of `step` due at `due`.
fn fired(all: &[Envelope], case: &CaseId, step: Step, due: Instant, kind: Kind) -> bool {
    // the id is made only for a case that has such events at all (most have none)
    all.iter().any(|e| e.kind == kind.event_type())
        && event::answered(all, &[firing_id(case.as_str(), step.name(), due, kind.name())])
}

/// A case's records after `plan`: the kept and newly armed, in step order.
pub fn after(plan: &Plan) -> Vec<(Step, Armed)> {
    let mut records: Vec<(Step, Armed)> = plan.kept.iter().chain(&plan.armed).cloned().collect();
    records.sort_by_key(|(step, _)| step.code());
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use xinfang_shared::event::{EventData, Outcome};
    use xinfang_shared::fixtures::{self, at};
    use xinfang_shared::ids::OrganId;
    use xinfang_shared::indicators::Count;

    /// A case's events planned one after another with its records in memory, as a rebuild
    /// replays them: what each step holds after each event, and what was counted.
    fn replay(events: &[Envelope]) -> (Vec<Vec<Step>>, Vec<(Count, &'static str)>) {
        let (policy, calendar) = (Policy::default(), Calendar::shipped());
        let rules = Rules { policy: &policy, calendar: &calendar };
        let (mut records, mut steps, mut counted) = (Vec::new(), Vec::new(), Vec::new());
        for (i, e) in events.iter().enumerate() {
            let plan = plan(&rules, &e.case_id, &records, &events[..=i], events, e.at, Cause::Rebuild).unwrap();
            counted.extend(plan.observed.as_ref().map(|o| (o.count, o.outcome)));
            records = after(&plan);
            steps.push(records.iter().map(|(s, _)| *s).collect());
        }
        (steps, counted)
    }

    #[test]
    fn a_case_replayed_in_memory_ends_with_its_open_steps_and_counts_once() {
        let registered = fixtures::registered("01R", at(2, 9));
        let routed = fixtures::routed(&registered, at(2, 10));
        let organ = OrganId::parse("320211-zjj").unwrap();
        let accepted = fixtures::event("01A", at(3, 9), "staff", None, EventData::Accepted { organ_id: organ });
        let replied = fixtures::event(
            "01P",
            at(9, 9),
            "staff",
            None,
            EventData::Replied { outcome: Outcome::Supported, summary: "已办。".into() },
        );
        let (steps, counted) = replay(&[registered, routed, accepted, replied]);
        assert_eq!(
            steps,
            vec![
                vec![Step::Route],
                vec![Step::Objection, Step::Acceptance],
                vec![Step::Handling],
                vec![Step::ReviewWindow],
            ]
        );
        assert_eq!(
            counted,
            vec![(Count::Petitions, "first"), (Count::AcceptanceDecisions, "on_time"), (Count::Replies, "on_time")]
        );
    }

    #[test]
    fn a_step_closed_after_its_due_owes_its_breach_unless_the_ledger_has_it() {
        let (policy, calendar) = (Policy::default(), Calendar::shipped());
        let rules = Rules { policy: &policy, calendar: &calendar };
        let registered = fixtures::registered("01R", at(2, 9));
        let case = registered.case_id.clone();
        let first = std::slice::from_ref(&registered);
        let route = plan(&rules, &case, &[], first, first, at(2, 9), Cause::Rebuild).map(|p| after(&p)).unwrap();
        // routed a month late: the route step closes past its due, its breach never fired
        let late = fixtures::routed(&registered, at(28, 9));
        let events = [registered, late.clone()];
        let p = plan(&rules, &case, &route, &events, &events, late.at, Cause::Rebuild).unwrap();
        assert_eq!(p.breached_late.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![Step::Route]);
        // the same, with the breach in the ledger: nothing owed
        let mut fired = route.clone();
        fired[0].1.breached = true;
        let p = plan(&rules, &case, &fired, &events, &events, late.at, Cause::Rebuild).unwrap();
        assert!(p.breached_late.is_empty());
    }
}
