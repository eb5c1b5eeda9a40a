//! Worklists (待办), pure: what an organ's inbox and the bureau's overview show of a case —
//! its stage, the step it waits on and how much time is left — from the case's events, the
//! periods and the calendar. Overdue first, then by the nearest due.

use serde::Serialize;

use crate::calendar::Calendar;
use crate::dues::{open_steps, warn_at, Policy};
use crate::event::Envelope;
use crate::ids::{CaseId, OrganId};
use crate::state::{CaseState, Stage};
use crate::time::Instant;
use crate::transfer::registered_of;

/// The event types that move a case's stage, organ or clock: all a worklist keeps of a case.
pub const TYPES: &[&str] = &[
    "registered",
    "transferred_in",
    "routed",
    "forwarded",
    "accepted",
    "rejected",
    "jurisdiction_declined",
    "extended",
    "replied",
    "evaluated",
    "review_requested",
    "review_replied",
    "rereview_requested",
    "rereview_replied",
    "hearing_started",
    "hearing_ended",
    "terminated",
    "closed",
    "leader_in_charge",
    "leader_released",
];

/// How pressing a case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Past its due (逾期).
    Overdue,
    /// Past its warning (80 % of the period or 3 days before the due).
    Warning,
    /// Within its period.
    Normal,
    /// Waiting on the petitioner, or nothing open.
    Idle,
}

/// One line of a worklist. No personal data: the title, not the petitioners.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub case_id: CaseId,
    pub title: String,
    pub category: String,
    pub kind: String,
    pub channel: String,
    /// Where the matter is (its division code).
    pub division: String,
    pub headcount: u32,
    pub stage: Stage,
    pub stage_label: &'static str,
    pub organ_id: Option<OrganId>,
    pub registered_at: Instant,
    /// The time of the case's latest event.
    pub updated_at: Instant,
    pub repeat_of: Option<CaseId>,
    /// The leader in charge of it (包案), as 张明（区长）.
    pub leader: Option<String>,
    /// The step the case waits on (the earliest due of its open steps).
    pub step: Option<&'static str>,
    pub due_at: Option<Instant>,
    /// Seconds until the due (negative when overdue).
    pub seconds_left: Option<i64>,
    pub urgency: Urgency,
}

/// Steps that wait on the petitioner, not on staff.
const PETITIONER_WINDOWS: &[&str] = &["review_window", "rereview_window"];

/// The worklist line of a case from its events (oldest first), or `None` if they cannot
/// start a case.
pub fn item(events: &[Envelope], policy: &Policy, cal: &Calendar, now: Instant) -> Option<Item> {
    let state = CaseState::fold(events)?;
    let registered = registered_of(events)?;
    let steps = open_steps(events, &state, policy, cal);
    let next = steps.iter().min_by_key(|(_, (_, due))| due.at).map(|(step, (start, due))| (*step, *start, due.at));
    let urgency = match next {
        None => Urgency::Idle,
        Some((step, _, _)) if PETITIONER_WINDOWS.contains(&step) => Urgency::Idle,
        Some((_, _, due)) if now >= due => Urgency::Overdue,
        Some((_, start, due)) if now >= warn_at(start, due) => Urgency::Warning,
        Some(_) => Urgency::Normal,
    };
    let p = &registered.petition;
    Some(Item {
        case_id: state.case_id.clone(),
        title: p.title.clone(),
        category: p.category.clone(),
        kind: p.kind.as_str().to_string(),
        channel: p.channel.as_str().to_string(),
        division: p.location.division.to_string(),
        headcount: p.headcount,
        stage: state.stage,
        stage_label: state.stage.label_zh(),
        organ_id: state.organ.clone(),
        registered_at: state.registered_at,
        updated_at: state.last_at,
        repeat_of: registered.repeat_of.clone(),
        leader: state.leader.as_ref().map(|l| l.label()),
        step: next.map(|(s, _, _)| s),
        due_at: next.map(|(_, _, d)| d),
        seconds_left: next.map(|(_, _, d)| (d - now).num_seconds()),
        urgency,
    })
}

/// Overdue first, then warnings, then by the nearest due; cases without a due last.
pub fn sort(items: &mut [Item]) {
    items.sort_by(|a, b| {
        a.urgency.cmp(&b.urgency).then_with(|| match (a.due_at, b.due_at) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.case_id.cmp(&b.case_id),
        })
    });
}

/// Which cases a worklist request keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub stage: Option<Stage>,
    pub organ: Option<OrganId>,
    /// Only overdue (and, with `warning`, warned) cases.
    pub late_only: bool,
}

impl Filter {
    pub fn keeps(&self, item: &Item) -> bool {
        self.stage.is_none_or(|s| s == item.stage)
            && self.organ.as_ref().is_none_or(|o| item.organ_id.as_ref() == Some(o))
            && (!self.late_only || matches!(item.urgency, Urgency::Overdue | Urgency::Warning))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn a_routed_case_waits_for_acceptance_and_turns_overdue() {
        let registered = fixtures::registered("e1", fixtures::at(2, 9));
        let events = vec![registered.clone(), fixtures::routed(&registered, fixtures::at(2, 10))];
        let policy = Policy::default();
        let cal = Calendar::shipped();
        let routed_at = events.last().unwrap().at;
        let fresh = item(&events, &policy, &cal, routed_at).unwrap();
        assert_eq!(fresh.stage, Stage::WithOrgan);
        assert_eq!(fresh.urgency, Urgency::Normal);
        assert!(fresh.seconds_left.unwrap() > 0);
        let late = item(&events, &policy, &cal, routed_at + chrono::Duration::days(60)).unwrap();
        assert_eq!(late.urgency, Urgency::Overdue);
        assert!(late.seconds_left.unwrap() < 0);
        let mut both = vec![fresh.clone(), late.clone()];
        sort(&mut both);
        assert_eq!(both[0].urgency, Urgency::Overdue, "overdue first");
        assert!(Filter { late_only: true, ..Default::default() }.keeps(&late));
        assert!(!Filter { late_only: true, ..Default::default() }.keeps(&fresh));
    }
}
