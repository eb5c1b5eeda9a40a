//! The indicators the offices are measured by (DOMAIN.md "Indicators"), as counts derived from
//! the ledger. Each event, read with the case's events before it, adds one to at most one
//! count; the rates are ratios of counts, taken by Prometheus recording rules
//! (`deploy/prometheus/rules/indicators.yml`):
//! - 及时受理率 (timely acceptance): `acceptance_decisions{outcome="on_time"}` over all of them;
//! - 按期办结率 (on-time completion): `replies{outcome="on_time"}` over all replies;
//! - 参评率 (evaluation rate): evaluations over replies;
//! - 满意率 (satisfaction): `satisfied` + `basically_satisfied` over evaluations;
//! - 重复信访率 (repeat rate): `petitions{outcome="repeat"}` over all petitions.
//!
//! Pure: the deadlines service keeps the counts with its timers (one write with the event's
//! position, so a redelivery adds nothing) and exports them as `xf_deadlines_<count>_total`.

use crate::calendar::Calendar;
use crate::dues::{open_dues, Policy};
use crate::event::{Envelope, EventData, Satisfaction};
use crate::state::CaseState;

/// A count kept for the indicators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Petitions registered here: `first` or `repeat` (linked to an open or earlier case).
    Petitions,
    /// Acceptances and refusals (受理 / 不予受理): `on_time` within the acceptance period, else `late`.
    AcceptanceDecisions,
    /// Replies (处理意见书): `on_time` by the handling due (or the assigned one), else `late`.
    Replies,
    /// The petitioner's ratings of a reply: `satisfied`, `basically_satisfied`, `unsatisfied`.
    Evaluations,
}

/// Label value for a count not tied to an organ, or whose case had none.
pub const NO_ORGAN: &str = "none";

impl Count {
    /// Every count, in a fixed order.
    pub const ALL: [Count; 4] = [Count::Petitions, Count::AcceptanceDecisions, Count::Replies, Count::Evaluations];

    /// Its name: the metric is `xf_deadlines_<name>_total`.
    pub fn name(self) -> &'static str {
        match self {
            Count::Petitions => "petitions",
            Count::AcceptanceDecisions => "acceptance_decisions",
            Count::Replies => "replies",
            Count::Evaluations => "evaluations",
        }
    }

    /// The values its `outcome` label takes.
    pub fn outcomes(self) -> &'static [&'static str] {
        match self {
            Count::Petitions => &["first", "repeat"],
            Count::AcceptanceDecisions | Count::Replies => &["on_time", "late"],
            Count::Evaluations => &["satisfied", "basically_satisfied", "unsatisfied"],
        }
    }

    /// Whether it is counted by organ (petitions are counted before any organ has them).
    pub fn by_organ(self) -> bool {
        self != Count::Petitions
    }

    /// The metric's help text.
    pub fn help(self) -> &'static str {
        match self {
            Count::Petitions => "Petitions registered at this node, first or repeat (重复信访率)",
            Count::AcceptanceDecisions => {
                "Acceptances and refusals by organ, on time or late against the acceptance period (及时受理率)"
            }
            Count::Replies => "Replies by organ, on time or late against the handling due (按期办结率)",
            Count::Evaluations => "Petitioners' ratings of replies by organ (参评率, 满意率)",
        }
    }
}

/// One addition to a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub count: Count,
    /// The organ's id, or [`NO_ORGAN`].
    pub organ: String,
    pub outcome: &'static str,
}

/// What `event` adds to the counts, given the case's events before it (oldest first).
pub fn observe(before: &[Envelope], event: &Envelope, policy: &Policy, cal: &Calendar) -> Option<Observation> {
    let data = event.data().ok().flatten()?;
    // folded only for the events that need the case (most events count nothing)
    let state = std::cell::LazyCell::new(|| CaseState::fold(before));
    let organ_of = |state: &Option<CaseState>| {
        state.as_ref().and_then(|s| s.organ.as_ref()).map_or(NO_ORGAN.to_string(), |o| o.to_string())
    };
    // on time when no due was open for the step (decided at once) or the event came by it
    let by_due = |step: &str| {
        let due = state.as_ref().and_then(|s| open_dues(before, s, policy, cal).get(step).copied());
        if due.is_none_or(|d| event.at <= d.at) {
            "on_time"
        } else {
            "late"
        }
    };
    let (count, organ, outcome) = match data {
        EventData::Registered(r) => {
            (Count::Petitions, NO_ORGAN.to_string(), if r.repeat_of.is_some() { "repeat" } else { "first" })
        }
        EventData::Accepted { organ_id } | EventData::Rejected { organ_id, .. } => {
            (Count::AcceptanceDecisions, organ_id.to_string(), by_due("acceptance"))
        }
        EventData::Replied { .. } => (Count::Replies, organ_of(&state), by_due("handling")),
        EventData::Evaluated { satisfaction } => (
            Count::Evaluations,
            organ_of(&state),
            match satisfaction {
                Satisfaction::Satisfied => "satisfied",
                Satisfaction::BasicallySatisfied => "basically_satisfied",
                Satisfaction::Unsatisfied => "unsatisfied",
            },
        ),
        _ => return None,
    };
    Some(Observation { count, organ, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outcome;
    use crate::fixtures::{self, at};
    use crate::ids::OrganId;

    fn organ() -> OrganId {
        OrganId::parse("320211-zjj").unwrap()
    }

    fn history() -> Vec<Envelope> {
        let registered = fixtures::registered("01REG", at(2, 9));
        let routed = fixtures::routed(&registered, at(2, 10));
        vec![registered, routed]
    }

    fn observe_all(events: &[Envelope]) -> Vec<Observation> {
        let (policy, cal) = (Policy::default(), Calendar::shipped());
        (0..events.len()).filter_map(|i| observe(&events[..i], &events[i], &policy, &cal)).collect()
    }

    fn obs(count: Count, organ: &str, outcome: &'static str) -> Observation {
        Observation { count, organ: organ.into(), outcome }
    }

    #[test]
    fn each_decision_counts_once_against_its_own_period() {
        let mut events = history();
        let on_time = fixtures::event("a", at(10, 9), "organ", None, EventData::Accepted { organ_id: organ() });
        events.push(on_time);
        let reply = EventData::Replied { outcome: Outcome::Supported, summary: "s".into() };
        // handling is 60 days from acceptance: a reply on day 30 is on time
        events.push(fixtures::event("r", at(30, 9), "organ", None, reply));
        events.push(fixtures::event(
            "e",
            at(31, 9),
            "petitioner",
            None,
            EventData::Evaluated { satisfaction: Satisfaction::BasicallySatisfied },
        ));
        let got = observe_all(&events);
        assert_eq!(
            got,
            [
                obs(Count::Petitions, NO_ORGAN, "first"),
                obs(Count::AcceptanceDecisions, "320211-zjj", "on_time"),
                obs(Count::Replies, "320211-zjj", "on_time"),
                obs(Count::Evaluations, "320211-zjj", "basically_satisfied"),
            ]
        );
    }

    #[test]
    fn a_decision_after_the_acceptance_due_is_late() {
        let mut events = history();
        // routed on day 2: 15 calendar days end with day 17 (no holiday in the fixture month)
        let refused = EventData::Rejected {
            organ_id: organ(),
            reason_code: crate::event::RejectReason::NotAPetition,
            note: String::new(),
        };
        events.push(fixtures::event("x", at(25, 9), "organ", None, refused));
        assert_eq!(observe_all(&events)[1], obs(Count::AcceptanceDecisions, "320211-zjj", "late"));
    }

    #[test]
    fn other_events_count_nothing() {
        let events = history();
        assert_eq!(observe_all(&events).len(), 1, "the routing adds to no count");
    }
}
