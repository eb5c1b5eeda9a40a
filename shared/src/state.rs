//! The case state machine (DOMAIN.md), as pure code: [`CaseState::apply`] folds what the
//! ledger says happened; [`decide`] checks an action against the current state and the
//! regulation and returns the events to append, or why not.

use serde::{Deserialize, Serialize};

use crate::calendar::{Calendar, Period};
use crate::event::{Actor, ActorKind, Envelope, EventData, Outcome, RejectReason, Satisfaction};
use crate::ids::{CaseId, OrganId};
use crate::reception::Leader;
use crate::time::Instant;

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Registered (or declined, or transferred in), waiting for routing (转送/交办).
    AwaitingRoute,
    /// With the handling organ, waiting for 受理 or 不予受理.
    WithOrgan,
    /// Sent to another node (属地); the case continues there.
    Forwarded,
    /// 受理: being handled.
    Accepted,
    /// 不予受理: refused in writing.
    Rejected,
    /// 处理意见书 delivered; the petitioner may request review (复查) within 30 days.
    Replied,
    /// 复查 requested.
    ReviewRequested,
    /// 复查意见 delivered; the petitioner may request re-review (复核) within 30 days.
    ReviewReplied,
    /// 复核 requested.
    RereviewRequested,
    /// 听证 under way; the re-review clock stops.
    InHearing,
    /// 终结: re-review done; the same matter is not accepted again (Art. 36 ¶3).
    Terminated,
    /// Closed: withdrawn, or a petitioner window expired.
    Closed,
}

impl Stage {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingRoute => "awaiting_route",
            Self::WithOrgan => "with_organ",
            Self::Forwarded => "forwarded",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Replied => "replied",
            Self::ReviewRequested => "review_requested",
            Self::ReviewReplied => "review_replied",
            Self::RereviewRequested => "rereview_requested",
            Self::InHearing => "in_hearing",
            Self::Terminated => "terminated",
            Self::Closed => "closed",
        }
    }

    /// 中文 label for pages and notices.
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::AwaitingRoute => "待转送交办",
            Self::WithOrgan => "待受理",
            Self::Forwarded => "已转属地办理",
            Self::Accepted => "办理中",
            Self::Rejected => "不予受理",
            Self::Replied => "已出具处理意见",
            Self::ReviewRequested => "复查中",
            Self::ReviewReplied => "已出具复查意见",
            Self::RereviewRequested => "复核中",
            Self::InHearing => "听证中",
            Self::Terminated => "已终结",
            Self::Closed => "已办结",
        }
    }

    /// No action can move it any more at this node.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Forwarded | Self::Rejected | Self::Terminated | Self::Closed)
    }
}

/// What a case's events add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseState {
    pub case_id: CaseId,
    pub stage: Stage,
    /// The organ the case is with (the reviewing organ during review).
    pub organ: Option<OrganId>,
    pub declines: u32,
    pub extended: bool,
    /// The petitioner rated the latest opinion.
    pub evaluated: bool,
    /// When the latest opinion (reply, review or re-review) was given.
    pub opinion_at: Option<Instant>,
    /// Effective time of the latest event.
    pub last_at: Instant,
    pub registered_at: Instant,
    /// The leader in personal charge of the case (包案).
    #[serde(default)]
    pub leader: Option<Leader>,
    /// The leader who received the petitioner at a reception.
    #[serde(default)]
    pub received_by: Option<Leader>,
}

impl CaseState {
    /// The state after a case's first event, or `None` if it cannot start a case.
    pub fn start(first: &Envelope) -> Option<Self> {
        let fresh = Self {
            case_id: first.case_id.clone(),
            stage: Stage::AwaitingRoute,
            organ: None,
            declines: 0,
            extended: false,
            evaluated: false,
            opinion_at: None,
            last_at: first.at,
            registered_at: first.at,
            leader: None,
            received_by: None,
        };
        match first.data() {
            Ok(Some(EventData::Registered(_))) => Some(fresh),
            Ok(Some(EventData::TransferredIn { snapshot, .. })) => {
                let mut state = fresh;
                if let Some(before) = Self::fold(&snapshot_events(snapshot)) {
                    state = Self { registered_at: before.registered_at, ..before };
                }
                state.transferred(first.at);
                Some(state)
            }
            _ => None,
        }
    }

    /// Arriving at this node: a review or re-review request keeps waiting for its reviewer;
    /// anything else waits for routing here.
    fn transferred(&mut self, at: Instant) {
        self.last_at = self.last_at.max(at);
        self.stage = match self.stage {
            Stage::ReviewRequested => Stage::ReviewRequested,
            Stage::RereviewRequested | Stage::InHearing => Stage::RereviewRequested,
            _ => Stage::AwaitingRoute,
        };
    }

    /// Folds a case's events, oldest first; `None` if the first cannot start a case.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Envelope>) -> Option<Self> {
        let mut it = events.into_iter();
        let mut state = Self::start(it.next()?)?;
        for e in it {
            state.apply(e);
        }
        Some(state)
    }

    /// Applies one recorded event. The ledger is the truth: this records, it does not judge.
    pub fn apply(&mut self, e: &Envelope) {
        if e.at > self.last_at {
            self.last_at = e.at;
        }
        let Ok(Some(data)) = e.data() else { return };
        use EventData as D;
        match data {
            D::Routed { organ_id, .. } => {
                self.organ = Some(organ_id.clone());
                if self.stage == Stage::AwaitingRoute {
                    self.stage = Stage::WithOrgan;
                }
            }
            D::Forwarded { .. } => self.stage = Stage::Forwarded,
            D::TransferredIn { .. } => self.transferred(e.at),
            D::Accepted { .. } => self.stage = Stage::Accepted,
            D::Rejected { .. } => self.stage = Stage::Rejected,
            D::JurisdictionDeclined { .. } => {
                self.declines += 1;
                self.organ = None;
                self.stage = Stage::AwaitingRoute;
            }
            D::Extended { .. } => self.extended = true,
            D::Replied { .. } => self.opinion(Stage::Replied, e.at),
            D::Evaluated { .. } => self.evaluated = true,
            D::ReviewRequested { .. } => self.stage = Stage::ReviewRequested,
            D::ReviewReplied { .. } => self.opinion(Stage::ReviewReplied, e.at),
            D::RereviewRequested { .. } => self.stage = Stage::RereviewRequested,
            D::RereviewReplied { .. } => self.opinion(Stage::Terminated, e.at),
            D::HearingStarted {} => self.stage = Stage::InHearing,
            D::HearingEnded {} => self.stage = Stage::RereviewRequested,
            D::Terminated {} => self.stage = Stage::Terminated,
            D::Closed { .. } => self.stage = Stage::Closed,
            D::LeaderInCharge { leader, .. } => self.leader = Some(leader.clone()),
            D::LeaderReleased { .. } => self.leader = None,
            D::ReceptionRecorded { leader, attended: true, .. } => self.received_by = Some(leader.clone()),
            _ => {}
        }
    }

    fn opinion(&mut self, stage: Stage, at: Instant) {
        self.stage = stage;
        self.opinion_at = Some(at);
        self.evaluated = false;
    }
}

/// The envelopes of a `transferred_in` snapshot (unreadable entries are skipped).
pub fn snapshot_events(snapshot: &[serde_json::Value]) -> Vec<Envelope> {
    snapshot.iter().filter_map(|v| serde_json::from_value(v.clone()).ok()).collect()
}

/// An action by an organ, a petitioner or staff (DESIGN.md §5 `case.act`).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Accept,
    Reject {
        reason_code: RejectReason,
        note: String,
    },
    DeclineJurisdiction {
        suggested_organ_id: Option<OrganId>,
        note: String,
    },
    Extend {
        days: u32,
        reason: String,
        approved_by: String,
    },
    Reply {
        outcome: Outcome,
        summary: String,
    },
    Evaluate {
        satisfaction: Satisfaction,
    },
    RequestReview {
        reason: String,
    },
    ReplyReview {
        outcome: Outcome,
        summary: String,
    },
    RequestRereview {
        reason: String,
    },
    StartHearing,
    EndHearing,
    ReplyRereview {
        outcome: Outcome,
        summary: String,
    },
    Withdraw {
        reason: String,
    },
    /// 包案 by a leader (or handing the case over to another), by the bureau.
    TakeCharge {
        leader: Leader,
    },
    /// The leader in charge lets the case go, by the bureau.
    ReleaseCharge {
        reason: String,
    },
}

impl Action {
    /// The wire name of the action.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject { .. } => "reject",
            Self::DeclineJurisdiction { .. } => "decline_jurisdiction",
            Self::Extend { .. } => "extend",
            Self::Reply { .. } => "reply",
            Self::Evaluate { .. } => "evaluate",
            Self::RequestReview { .. } => "request_review",
            Self::ReplyReview { .. } => "review_reply",
            Self::RequestRereview { .. } => "request_rereview",
            Self::StartHearing => "hearing_start",
            Self::EndHearing => "hearing_end",
            Self::ReplyRereview { .. } => "rereview_reply",
            Self::Withdraw { .. } => "withdraw",
            Self::TakeCharge { .. } => "take_charge",
            Self::ReleaseCharge { .. } => "release_charge",
        }
    }

    /// Every action name, for error messages.
    pub const NAMES: &'static [&'static str] = &[
        "accept",
        "reject",
        "decline_jurisdiction",
        "extend",
        "reply",
        "evaluate",
        "request_review",
        "review_reply",
        "request_rereview",
        "hearing_start",
        "hearing_end",
        "rereview_reply",
        "withdraw",
        "take_charge",
        "release_charge",
    ];

    pub fn by_petitioner(&self) -> bool {
        matches!(
            self,
            Self::Evaluate { .. } | Self::RequestReview { .. } | Self::RequestRereview { .. } | Self::Withdraw { .. }
        )
    }
}

/// Periods the state machine checks (the petitioner's windows).
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// 复查 request window after the reply (Art. 35): 30 days.
    pub review: Period,
    /// 复核 request window after the review opinion (Art. 36): 30 days.
    pub rereview: Period,
}

impl Default for Windows {
    fn default() -> Self {
        Self { review: Period::Days(30), rereview: Period::Days(30) }
    }
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not allowed in the case's current stage.
    #[error("{action} is not allowed while the case is {stage}")]
    InvalidTransition { action: &'static str, stage: &'static str },
    /// A field of the action is out of range.
    #[error("{field}: {message}")]
    InvalidField { field: &'static str, message: String },
    /// The actor may not take this action on this case.
    #[error("{0}")]
    Unauthorized(String),
}

/// Checks `action` by `actor` at effective time `at` against `state`; returns the events'
/// data to append, in order.
pub fn decide(
    state: &CaseState,
    action: &Action,
    actor: &Actor,
    at: Instant,
    calendar: &Calendar,
    windows: Windows,
) -> Result<Vec<EventData>, Refusal> {
    use Stage as S;
    let name = action.name();
    let refuse = || Refusal::InvalidTransition { action: name, stage: state.stage.as_str() };
    if at < state.last_at {
        return Err(Refusal::InvalidField {
            field: "at",
            message: "must not be earlier than the case's latest event".into(),
        });
    }
    authorize(state, action, actor)?;
    let organ = || state.organ.clone().ok_or_else(refuse);
    let within = |window: Period, field: &'static str| -> Result<(), Refusal> {
        let since = state.opinion_at.ok_or_else(refuse)?;
        if at > calendar.due(since, window).at {
            Err(Refusal::InvalidField { field, message: format!("the {window} window for this request has passed") })
        } else {
            Ok(())
        }
    };
    use EventData as D;
    let events = match (action, state.stage) {
        (Action::Accept, S::WithOrgan) => vec![D::Accepted { organ_id: organ()? }],
        (Action::Reject { reason_code, note }, S::WithOrgan) => {
            vec![D::Rejected { organ_id: organ()?, reason_code: *reason_code, note: note.clone() }]
        }
        (Action::DeclineJurisdiction { suggested_organ_id, note }, S::WithOrgan) => {
            vec![D::JurisdictionDeclined {
                organ_id: organ()?,
                suggested_organ_id: suggested_organ_id.clone(),
                note: note.clone(),
            }]
        }
        (Action::Extend { days, reason, approved_by }, S::Accepted) => {
            if state.extended {
                return Err(Refusal::InvalidField {
                    field: "days",
                    message: "the handling period can be extended only once (Art. 34)".into(),
                });
            }
            check_extension(*days, reason, approved_by)?;
            vec![D::Extended { days: *days, reason: reason.clone(), approved_by: approved_by.clone() }]
        }
        (Action::Reply { outcome, summary }, S::Accepted) => {
            vec![D::Replied { outcome: *outcome, summary: non_blank(summary, "summary")? }]
        }
        (Action::Evaluate { satisfaction }, S::Replied | S::ReviewReplied | S::Terminated) if !state.evaluated => {
            vec![D::Evaluated { satisfaction: *satisfaction }]
        }
        (Action::RequestReview { reason }, S::Replied) => {
            within(windows.review, "at")?;
            vec![D::ReviewRequested { reason: reason.clone() }]
        }
        (Action::ReplyReview { outcome, summary }, S::ReviewRequested) => {
            vec![D::ReviewReplied { outcome: *outcome, summary: non_blank(summary, "summary")? }]
        }
        (Action::RequestRereview { reason }, S::ReviewReplied) => {
            within(windows.rereview, "at")?;
            vec![D::RereviewRequested { reason: reason.clone() }]
        }
        (Action::StartHearing, S::RereviewRequested) => vec![D::HearingStarted {}],
        (Action::EndHearing, S::InHearing) => vec![D::HearingEnded {}],
        (Action::ReplyRereview { outcome, summary }, S::RereviewRequested) => {
            vec![D::RereviewReplied { outcome: *outcome, summary: non_blank(summary, "summary")? }, D::Terminated {}]
        }
        (Action::TakeCharge { leader }, stage) if !stage.is_final() => {
            if state.leader.as_ref() == Some(leader) {
                return Err(Refusal::InvalidField {
                    field: "leader",
                    message: format!("{} is already in charge of this case", leader.label()),
                });
            }
            vec![D::LeaderInCharge { leader: leader.clone(), previous: state.leader.clone() }]
        }
        (Action::ReleaseCharge { reason }, _) => match &state.leader {
            Some(leader) => vec![D::LeaderReleased { leader: leader.clone(), reason: reason.clone() }],
            None => return Err(refuse()),
        },
        (Action::Withdraw { reason }, stage) if !stage.is_final() => {
            vec![D::Closed { reason: if reason.trim().is_empty() { "withdrawn".into() } else { reason.clone() } }]
        }
        _ => return Err(refuse()),
    };
    Ok(events)
}

/// The organ's actions [`decide`] can take in `state` (for the case page's forms).
pub fn organ_actions(state: &CaseState) -> Vec<&'static str> {
    use Stage as S;
    match state.stage {
        S::WithOrgan => vec!["accept", "reject", "decline_jurisdiction"],
        S::Accepted if state.extended => vec!["reply"],
        S::Accepted => vec!["extend", "reply"],
        S::ReviewRequested => vec!["review_reply"],
        S::RereviewRequested => vec!["hearing_start", "rereview_reply"],
        S::InHearing => vec!["hearing_end"],
        _ => vec![],
    }
}

/// The petitioner's actions [`decide`] can take in `state` (windows aside).
pub fn petitioner_actions(state: &CaseState) -> Vec<&'static str> {
    use Stage as S;
    let mut actions = Vec::new();
    if matches!(state.stage, S::Replied | S::ReviewReplied | S::Terminated) && !state.evaluated {
        actions.push("evaluate");
    }
    match state.stage {
        S::Replied => actions.push("request_review"),
        S::ReviewReplied => actions.push("request_rereview"),
        _ => {}
    }
    if !state.stage.is_final() {
        actions.push("withdraw");
    }
    actions
}

/// Art. 34: at most 30 days, with a reason and the approver.
pub fn check_extension(days: u32, reason: &str, approved_by: &str) -> Result<(), Refusal> {
    if !(1..=30).contains(&days) {
        return Err(Refusal::InvalidField { field: "days", message: "an extension is 1 to 30 days (Art. 34)".into() });
    }
    non_blank(reason, "reason")?;
    non_blank(approved_by, "approved_by")?;
    Ok(())
}

fn non_blank(s: &str, field: &'static str) -> Result<String, Refusal> {
    if s.trim().is_empty() {
        Err(Refusal::InvalidField { field, message: "must not be blank".into() })
    } else {
        Ok(s.to_string())
    }
}

fn authorize(state: &CaseState, action: &Action, actor: &Actor) -> Result<(), Refusal> {
    if matches!(action, Action::TakeCharge { .. } | Action::ReleaseCharge { .. }) && actor.kind != ActorKind::Staff {
        return Err(Refusal::Unauthorized(format!(
            "{} is the bureau's, not an organ's or a petitioner's",
            action.name()
        )));
    }
    match actor.kind {
        ActorKind::Staff => Ok(()),
        ActorKind::Petitioner if action.by_petitioner() => Ok(()),
        ActorKind::Organ if !action.by_petitioner() => match &state.organ {
            Some(o) if o.as_str() != actor.id => {
                Err(Refusal::Unauthorized(format!("the case is with organ {o}, not {}", actor.id)))
            }
            _ => Ok(()),
        },
        ActorKind::System => Err(Refusal::Unauthorized("system actors do not take case actions".into())),
        _ => Err(Refusal::Unauthorized(format!("{} is not an action for {:?} actors", action.name(), actor.kind))),
    }
}

#[cfg(test)]
mod tests;
