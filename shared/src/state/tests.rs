use super::*;
use crate::event::{Envelope, EventData, RouteMode};
use crate::ids::NodeCode;
use crate::time::cst;
use chrono::{Duration, TimeZone};
use proptest::prelude::*;

fn t0() -> Instant {
    cst().with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

fn env(n: usize, at: Instant, data: EventData) -> Envelope {
    Envelope::new(
        format!("e{n}"),
        CaseId::parse("320211-20260302-000001").unwrap(),
        NodeCode::parse("320211").unwrap(),
        at,
        Actor::system("test"),
        None,
        data,
    )
}

fn registered(at: Instant) -> Envelope {
    use crate::event::{Registered, RegisteredDue};
    use crate::ids::DivisionCode;
    use crate::petition::{Channel, Kind, Location, Petition, Petitioner};
    let petition = Petition {
        channel: Channel::Letter,
        received_at: at,
        petitioners: vec![Petitioner { name: "张三".into(), id_number: None, phone: None, address: None }],
        headcount: 1,
        location: Location { division: DivisionCode::parse("320211").unwrap(), address: None },
        category: "urban_construction".into(),
        kind: Kind::AppealRequest,
        respondent_organ_id: None,
        title: "t".into(),
        content: "c".into(),
    };
    let data = Registered {
        petition,
        query_code_hash: String::new(),
        query_code_sealed: None,
        repeat_of: None,
        group: false,
        urgent: false,
        urgent_reasons: vec![],
        petitioner_keys: vec![],
        terminated_matter: false,
        due: RegisteredDue { route: at, provisional: false },
    };
    env(0, at, EventData::Registered(Box::new(data)))
}

fn routed(n: usize, at: Instant) -> Envelope {
    env(
        n,
        at,
        EventData::Routed {
            organ_id: OrganId::parse("320211-zjj").unwrap(),
            organ_name: "住建局".into(),
            level: "district".into(),
            mode: RouteMode::Transfer,
            assigned_due: None,
            rule_id: "housing".into(),
            reason: "test".into(),
        },
    )
}

fn staff() -> Actor {
    Actor { kind: ActorKind::Staff, id: "clerk-1".into() }
}

fn organ(id: &str) -> Actor {
    Actor { kind: ActorKind::Organ, id: id.into() }
}

fn petitioner() -> Actor {
    Actor { kind: ActorKind::Petitioner, id: "self".into() }
}

/// Plays actions against a case, applying what `decide` returns as the ledger would.
struct Case {
    state: CaseState,
    n: usize,
    cal: Calendar,
}

impl Case {
    fn routed() -> Self {
        let mut state = CaseState::start(&registered(t0())).unwrap();
        state.apply(&routed(1, t0()));
        Self { state, n: 2, cal: Calendar::shipped() }
    }

    fn act(&mut self, action: Action, actor: Actor, at: Instant) -> Result<(), Refusal> {
        let events = decide(&self.state, &action, &actor, at, &self.cal, Windows::default())?;
        for data in events {
            self.n += 1;
            self.state.apply(&env(self.n, at, data));
        }
        Ok(())
    }
}

fn reply() -> Action {
    Action::Reply { outcome: Outcome::Supported, summary: "已维修".into() }
}

#[test]
fn the_full_path_to_termination() {
    let mut c = Case::routed();
    let t = t0();
    let org = organ("320211-zjj");
    assert_eq!(c.state.stage, Stage::WithOrgan);
    c.act(Action::Accept, org.clone(), t).unwrap();
    c.act(Action::Extend { days: 30, reason: "鉴定".into(), approved_by: "局长".into() }, org.clone(), t).unwrap();
    c.act(reply(), org.clone(), t + Duration::days(40)).unwrap();
    c.act(Action::Evaluate { satisfaction: Satisfaction::Unsatisfied }, petitioner(), t + Duration::days(41)).unwrap();
    c.act(Action::RequestReview { reason: "不服".into() }, petitioner(), t + Duration::days(45)).unwrap();
    c.act(
        Action::ReplyReview { outcome: Outcome::NotSupported, summary: "维持".into() },
        staff(),
        t + Duration::days(60),
    )
    .unwrap();
    c.act(Action::RequestRereview { reason: "不服".into() }, petitioner(), t + Duration::days(61)).unwrap();
    c.act(Action::StartHearing, staff(), t + Duration::days(62)).unwrap();
    assert_eq!(c.state.stage, Stage::InHearing);
    c.act(Action::EndHearing, staff(), t + Duration::days(63)).unwrap();
    c.act(
        Action::ReplyRereview { outcome: Outcome::NotSupported, summary: "维持".into() },
        staff(),
        t + Duration::days(70),
    )
    .unwrap();
    assert_eq!(c.state.stage, Stage::Terminated);
    assert!(matches!(
        c.act(Action::Withdraw { reason: String::new() }, petitioner(), t + Duration::days(71)),
        Err(Refusal::InvalidTransition { stage: "terminated", .. })
    ));
}

#[test]
fn reply_before_acceptance_names_the_stage() {
    let mut c = Case::routed();
    assert_eq!(
        c.act(reply(), organ("320211-zjj"), t0()),
        Err(Refusal::InvalidTransition { action: "reply", stage: "with_organ" })
    );
}

#[test]
fn extension_is_1_to_30_days_once_with_reason_and_approver() {
    let mut c = Case::routed();
    c.act(Action::Accept, staff(), t0()).unwrap();
    let ext =
        |days: u32, reason: &str, by: &str| Action::Extend { days, reason: reason.into(), approved_by: by.into() };
    for (a, field) in [
        (ext(45, "x", "y"), "days"),
        (ext(0, "x", "y"), "days"),
        (ext(10, " ", "y"), "reason"),
        (ext(10, "x", ""), "approved_by"),
    ] {
        assert!(matches!(c.act(a, staff(), t0()), Err(Refusal::InvalidField { field: f, .. }) if f == field));
    }
    c.act(ext(30, "x", "y"), staff(), t0()).unwrap();
    assert!(matches!(c.act(ext(5, "x", "y"), staff(), t0()), Err(Refusal::InvalidField { field: "days", .. })));
}

#[test]
fn review_window_is_30_days_after_the_reply() {
    let mut c = Case::routed();
    c.act(Action::Accept, staff(), t0()).unwrap();
    c.act(reply(), staff(), t0()).unwrap();
    // replied 2026-03-02 → 30 days → 2026-04-01 (Wed) 23:59:59
    let late = cst().with_ymd_and_hms(2026, 4, 2, 0, 0, 0).unwrap();
    let req = Action::RequestReview { reason: String::new() };
    assert!(matches!(c.act(req.clone(), petitioner(), late), Err(Refusal::InvalidField { field: "at", .. })));
    let in_time = cst().with_ymd_and_hms(2026, 4, 1, 23, 0, 0).unwrap();
    c.act(req, petitioner(), in_time).unwrap();
}

#[test]
fn actors_are_checked() {
    let mut c = Case::routed();
    assert!(matches!(c.act(Action::Accept, organ("320211-rsj"), t0()), Err(Refusal::Unauthorized(_))));
    assert!(matches!(c.act(Action::Accept, petitioner(), t0()), Err(Refusal::Unauthorized(_))));
    assert!(matches!(c.act(Action::Accept, Actor::system("x"), t0()), Err(Refusal::Unauthorized(_))));
    c.act(Action::Accept, organ("320211-zjj"), t0()).unwrap();
    c.act(reply(), organ("320211-zjj"), t0()).unwrap();
    let eval = Action::Evaluate { satisfaction: Satisfaction::Satisfied };
    assert!(matches!(c.act(eval.clone(), organ("320211-zjj"), t0()), Err(Refusal::Unauthorized(_))));
    c.act(eval.clone(), petitioner(), t0()).unwrap();
    assert!(c.act(eval, petitioner(), t0()).is_err(), "one evaluation per opinion");
}

#[test]
fn effective_time_never_goes_back() {
    let mut c = Case::routed();
    let earlier = t0() - Duration::hours(1);
    assert!(matches!(c.act(Action::Accept, staff(), earlier), Err(Refusal::InvalidField { field: "at", .. })));
}

#[test]
fn declines_count_and_reopen_routing() {
    let mut c = Case::routed();
    c.act(Action::DeclineJurisdiction { suggested_organ_id: None, note: "非本单位职责".into() }, staff(), t0())
        .unwrap();
    assert_eq!((c.state.stage, c.state.declines, c.state.organ.clone()), (Stage::AwaitingRoute, 1, None));
    assert!(c.act(Action::Accept, staff(), t0()).is_err());
}

/// The legal moves of DOMAIN.md, written as a table independent of `decide`.
fn model(stage: Stage, action: &str, extended: bool, evaluated: bool) -> Option<Stage> {
    use Stage::*;
    let table: &[(Stage, &str, Stage)] = &[
        (WithOrgan, "accept", Accepted),
        (WithOrgan, "reject", Rejected),
        (WithOrgan, "decline_jurisdiction", AwaitingRoute),
        (Accepted, "extend", Accepted),
        (Accepted, "reply", Replied),
        (Replied, "evaluate", Replied),
        (Replied, "request_review", ReviewRequested),
        (ReviewRequested, "review_reply", ReviewReplied),
        (ReviewReplied, "evaluate", ReviewReplied),
        (ReviewReplied, "request_rereview", RereviewRequested),
        (RereviewRequested, "hearing_start", InHearing),
        (InHearing, "hearing_end", RereviewRequested),
        (RereviewRequested, "rereview_reply", Terminated),
        (Terminated, "evaluate", Terminated),
    ];
    if action == "withdraw" {
        return (!matches!(stage, Forwarded | Rejected | Terminated | Closed)).then_some(Closed);
    }
    if (action == "extend" && extended) || (action == "evaluate" && evaluated) {
        return None;
    }
    table.iter().find(|(s, a, _)| *s == stage && *a == action).map(|(_, _, next)| *next)
}

fn arb_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Accept),
        Just(Action::Reject { reason_code: RejectReason::Other, note: String::new() }),
        Just(Action::DeclineJurisdiction { suggested_organ_id: None, note: String::new() }),
        (1u32..=30).prop_map(|days| Action::Extend { days, reason: "r".into(), approved_by: "a".into() }),
        Just(reply()),
        Just(Action::Evaluate { satisfaction: Satisfaction::BasicallySatisfied }),
        Just(Action::RequestReview { reason: String::new() }),
        Just(Action::ReplyReview { outcome: Outcome::Explained, summary: "s".into() }),
        Just(Action::RequestRereview { reason: String::new() }),
        Just(Action::StartHearing),
        Just(Action::EndHearing),
        Just(Action::ReplyRereview { outcome: Outcome::Explained, summary: "s".into() }),
        Just(Action::Withdraw { reason: String::new() }),
    ]
}

/// The latest event of each type, in ledger order: what `Ledger::latest_of_each_type` reads.
fn latest_of_each_type(events: &[Envelope]) -> Vec<Envelope> {
    events
        .iter()
        .enumerate()
        .filter(|(i, e)| events[i + 1..].iter().all(|l| l.kind != e.kind))
        .map(|(_, e)| e.clone())
        .collect()
}

proptest! {
    /// Issue 18: routing reads a repeat's original case as the latest event of each type;
    /// folded, that must give the stage and organ the whole history gives.
    #[test]
    fn the_latest_event_of_each_type_gives_the_stage_and_organ_of_the_whole_history(
        actions in prop::collection::vec(arb_action(), 1..40)
    ) {
        let mut c = Case::routed();
        let mut t = t0();
        let mut events = vec![registered(t), routed(1, t)];
        for action in actions {
            if c.state.stage == Stage::AwaitingRoute {
                c.n += 1;
                // each reroute to another organ, so that an older organ would show
                let r = env(
                    c.n,
                    t,
                    EventData::Routed {
                        organ_id: OrganId::parse(&format!("320211-o{}", c.n)).unwrap(),
                        organ_name: "局".into(),
                        level: "district".into(),
                        mode: RouteMode::Transfer,
                        assigned_due: None,
                        rule_id: "r".into(),
                        reason: "test".into(),
                    },
                );
                c.state.apply(&r);
                events.push(r);
            }
            t += Duration::hours(5);
            if let Ok(recorded) = decide(&c.state, &action, &staff(), t, &c.cal, Windows::default()) {
                for data in recorded {
                    c.n += 1;
                    let e = env(c.n, t, data);
                    c.state.apply(&e);
                    events.push(e);
                }
            }
            let whole = CaseState::fold(&events).unwrap();
            let latest = CaseState::fold(&latest_of_each_type(&events)).unwrap();
            prop_assert_eq!((whole.stage, &whole.organ), (latest.stage, &latest.organ));
        }
    }

    #[test]
    fn accepted_sequences_are_exactly_the_legal_ones(actions in prop::collection::vec(arb_action(), 1..40)) {
        let mut c = Case::routed();
        let mut t = t0();
        for action in actions {
            if c.state.stage == Stage::AwaitingRoute {
                c.n += 1;
                c.state.apply(&routed(c.n, t));
            }
            t += Duration::hours(5);
            let before = c.state.clone();
            let want = model(before.stage, action.name(), before.extended, before.evaluated);
            let got = c.act(action.clone(), staff(), t);
            match (want, got) {
                (Some(next), Ok(())) => prop_assert_eq!(c.state.stage, next, "{:?} from {:?}", action, before.stage),
                (None, Err(_)) => prop_assert_eq!(&c.state, &before, "a refusal changes nothing"),
                (want, got) => prop_assert!(false, "{:?} in {:?}: model {:?}, decide {:?}", action, before.stage, want, got),
            }
        }
    }
}

#[test]
fn supervision_lasts_while_the_late_step_is_open_and_a_directive_until_the_next_decision() {
    use crate::calendar::Calendar;
    use crate::dues::{open_dues, Policy};
    use crate::event::{EscalationLevel, Step};
    let (cal, policy, t) = (Calendar::shipped(), Policy::default(), t0());
    let due = t + Duration::days(30);
    let supervised = |step| EventData::Escalated {
        level: EscalationLevel::Supervision,
        to: "320211-xfj".into(),
        due_at: Some(due),
        step: Some(step),
        reason: String::new(),
    };
    let directive = EventData::DirectiveReceived {
        text: "请限期受理".into(),
        due_at: due,
        directive_id: "d1".into(),
        escalation_id: "e1".into(),
        from_node: None,
    };
    let dues = |events: &[Envelope]| open_dues(events, &CaseState::fold(events).unwrap(), &policy, &cal);
    let mut events = vec![
        registered(t),
        routed(1, t + Duration::hours(1)),
        env(2, t + Duration::days(16), supervised(Step::Acceptance)),
        env(3, t + Duration::days(17), directive),
    ];
    let d = dues(&events);
    assert_eq!(d.get("supervision").map(|d| d.at), Some(due), "{d:?}");
    assert_eq!(d.get("directive").map(|d| d.at), Some(due), "{d:?}");
    // a supervision of a step that is not open (here: handling) is no timer
    let mut other = events[..2].to_vec();
    other.push(env(2, t + Duration::days(16), supervised(Step::Handling)));
    assert!(!dues(&other).contains_key("supervision"));
    // the organ accepts: the supervised step and the directive are done
    events.push(env(
        4,
        t + Duration::days(18),
        EventData::Accepted { organ_id: OrganId::parse("320211-zjj").unwrap() },
    ));
    let d = dues(&events);
    assert!(!d.contains_key("supervision") && !d.contains_key("directive"), "{d:?}");
    assert!(d.contains_key("handling"));
}

#[test]
fn a_hearing_stops_the_rereview_clock_and_moves_its_due_by_its_length() {
    use crate::calendar::{Calendar, Period};
    use crate::dues::{open_dues, Policy};
    use crate::event::Outcome;
    let (cal, policy, t) = (Calendar::shipped(), Policy::default(), t0());
    let org = || OrganId::parse("320211-zjj").unwrap();
    let opinion = || Outcome::NotSupported;
    let asked = t + Duration::days(40);
    let mut events = vec![
        registered(t),
        routed(1, t + Duration::hours(1)),
        env(2, t + Duration::days(1), EventData::Accepted { organ_id: org() }),
        env(3, t + Duration::days(10), EventData::Replied { outcome: opinion(), summary: "s".into() }),
        env(4, t + Duration::days(12), EventData::ReviewRequested { reason: String::new() }),
        env(5, t + Duration::days(20), EventData::ReviewReplied { outcome: opinion(), summary: "s".into() }),
        env(6, asked, EventData::RereviewRequested { reason: String::new() }),
    ];
    let dues = |events: &[Envelope]| open_dues(events, &CaseState::fold(events).unwrap(), &policy, &cal);
    let plain = cal.due(asked, Period::Days(30)).at;
    assert_eq!(dues(&events).get("rereview").map(|d| d.at), Some(plain));
    events.push(env(7, asked + Duration::days(2), EventData::HearingStarted {}));
    assert!(!dues(&events).contains_key("rereview"), "no clock while the hearing runs");
    events.push(env(8, asked + Duration::days(5), EventData::HearingEnded {}));
    assert_eq!(dues(&events).get("rereview").map(|d| d.at), Some(plain + Duration::days(3)));
    events.push(env(9, asked + Duration::days(6), EventData::HearingStarted {}));
    events.push(env(10, asked + Duration::days(6) + Duration::hours(5), EventData::HearingEnded {}));
    assert_eq!(dues(&events).get("rereview").map(|d| d.at), Some(plain + Duration::days(3) + Duration::hours(5)));
}

#[test]
fn a_report_notice_never_goes_to_the_organ_it_reports() {
    use crate::calendar::Calendar;
    use crate::dues::{open_dues, Policy};
    use crate::notice::{plan, Recipient};
    let (cal, policy, t) = (Calendar::shipped(), Policy::default(), t0());
    let plan_for = |events: &[Envelope]| {
        let state = CaseState::fold(events).unwrap();
        let dues = open_dues(events, &state, &policy, &cal);
        plan(events.last().unwrap(), events, &state, &|o| o.to_string(), &dues)
    };
    let appeal = vec![registered(t), routed(1, t + Duration::hours(1))];
    let p = plan_for(&appeal);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].template, &p[0].recipient),
        ("assignment", &Recipient::Organ(OrganId::parse("320211-zjj").unwrap()))
    );
    assert_eq!(p[0].id, "e1:assignment:320211-zjj");
    // the same routing of a report about that very organ: no notice to it
    let mut report = registered(t);
    report.data["kind"] = "complaint_report".into();
    report.data["respondent_organ_id"] = "320211-zjj".into();
    assert!(plan_for(&[report, routed(1, t + Duration::hours(1))]).is_empty());
    // the petitioner's receipt at registration
    let r = plan_for(&appeal[..1]);
    assert_eq!((r[0].template, &r[0].recipient), ("receipt", &Recipient::Petitioner));
    assert_eq!(r[0].context["case_id"], "320211-20260302-000001");
}

#[test]
fn a_leader_takes_charge_hands_over_and_releases_by_the_bureau_only() {
    let mut c = Case::routed();
    let zhang = crate::reception::Leader { name: "张明".into(), title: "区长".into() };
    let wang = crate::reception::Leader { name: "王强".into(), title: "副区长".into() };
    let take = |l: &crate::reception::Leader| Action::TakeCharge { leader: l.clone() };
    assert!(matches!(c.act(take(&zhang), organ("320211-zjj"), t0()), Err(Refusal::Unauthorized(_))));
    assert!(matches!(
        c.act(Action::ReleaseCharge { reason: String::new() }, staff(), t0()),
        Err(Refusal::InvalidTransition { .. })
    ));
    c.act(take(&zhang), staff(), t0()).unwrap();
    assert_eq!(c.state.leader.as_ref(), Some(&zhang));
    assert!(matches!(c.act(take(&zhang), staff(), t0()), Err(Refusal::InvalidField { field: "leader", .. })));
    let events = decide(&c.state, &take(&wang), &staff(), t0(), &c.cal, Windows::default()).unwrap();
    assert_eq!(events, vec![EventData::LeaderInCharge { leader: wang.clone(), previous: Some(zhang) }]);
    c.act(take(&wang), staff(), t0()).unwrap();
    c.act(Action::ReleaseCharge { reason: "已化解".into() }, staff(), t0()).unwrap();
    assert_eq!(c.state.leader, None);
    assert_eq!(c.state.stage, Stage::WithOrgan, "包案 does not move the case");
}
