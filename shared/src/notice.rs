//! Which written notices an event calls for (DOMAIN.md: accept or refuse in writing, Art. 23;
//! extensions told with reasons, Art. 34; the handling opinion delivered, with the way to
//! review, Arts. 35–36; organs told of assignments, reminders and supervision, Art. 40), and
//! what each notice says, as pure code. The notification service renders the context with the
//! node's templates and delivers.
//!
//! A notice's id is derived from its cause and recipient, so a replay plans the same notice
//! and a retry carries the same idempotency key. A report (检举控告) notice never goes to the
//! organ it reports (Art. 30 ¶3).

use serde_json::{json, Value};

use crate::event::{Envelope, EscalationLevel, EventData, RejectReason, Step};
use crate::ids::OrganId;
use crate::petition::Kind;
use crate::state::CaseState;
use crate::time::{rfc3339, Instant};
use crate::transfer::registered_of;

/// Who a notice is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// The (first) petitioner.
    Petitioner,
    /// An organ, by id.
    Organ(OrganId),
}

impl Recipient {
    /// `petitioner` or `organ`: picks the channel in `[notification.channels]`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Petitioner => "petitioner",
            Self::Organ(_) => "organ",
        }
    }
}

/// A notice to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub id: String,
    /// `receipt`, `assignment`, `acceptance_notice`, `refusal_notice`, `extension_notice`,
    /// `reply_delivery`, `reminder`, `supervision_notice`.
    pub template: &'static str,
    pub recipient: Recipient,
    /// What the template may say.
    pub context: Value,
}

/// Every template name, with the Chinese default text the node file may override.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "receipt",
        "【信访受理登记】{{ name }}：您的信访事项「{{ title }}」已于{{ registered_at }}登记，案件编号 {{ case_id }}，\
查询码 {{ query_code }}。请凭案件编号和查询码查询办理进度。",
    ),
    (
        "assignment",
        "{{ organ_name }}：现将信访事项「{{ title }}」（案件编号 {{ case_id }}）{{ mode }}你单位，请于{{ acceptance_due }}前\
告知信访人是否受理{% if assigned_due %}，并于{{ assigned_due }}前办结、报告结果{% endif %}。",
    ),
    (
        "acceptance_notice",
        "【受理告知书】{{ name }}：您的信访事项（案件编号 {{ case_id }}）已由{{ organ_name }}受理，\
将于{{ handling_due }}前出具处理意见。",
    ),
    (
        "refusal_notice",
        "【不予受理告知书】{{ name }}：您的信访事项（案件编号 {{ case_id }}）{{ organ_name }}决定不予受理。\
理由：{{ reason }}{% if note %}（{{ note }}）{% endif %}。{{ advice }}",
    ),
    (
        "extension_notice",
        "【延期告知书】{{ name }}：您的信访事项（案件编号 {{ case_id }}）因{{ reason }}，经{{ approved_by }}批准，\
办理期限延长{{ days }}日，至{{ handling_due }}。",
    ),
    (
        "reply_delivery",
        "【{{ opinion }}送达】{{ name }}：您的信访事项（案件编号 {{ case_id }}）{{ opinion }}如下：{{ summary }}。\
{% if next_step %}如不服，可自收到之日起30日内（{{ window_due }}前）请求{{ next_step }}。{% else %}本意见为复核意见，\
同一事实和理由不再受理。{% endif %}",
    ),
    (
        "reminder",
        "{{ organ_name }}：信访事项「{{ title }}」（案件编号 {{ case_id }}）的{{ step }}期限将于{{ due }}届满，请抓紧办理。",
    ),
    (
        "supervision_notice",
        "【督办通知】{{ organ_name }}：信访事项「{{ title }}」（案件编号 {{ case_id }}）{{ step }}已逾期，\
依《信访工作条例》第四十条予以督办，请于{{ due }}前办结并报告结果。",
    ),
    (
        "leader_reminder",
        "【包案提醒】{{ organ_name }}：请转报{{ leader }}——您包案的信访事项「{{ title }}」（案件编号 {{ case_id }}）\
{{ step }}已逾期，已予督办，请于{{ due }}前督促办结。",
    ),
    (
        "appointment_notice",
        "【约访确认】{{ name }}：您已预约{{ leader }}于{{ starts_at }}在{{ place }}接访，预约编号 {{ appointment_id }}，\
案件编号 {{ case_id }}。请携带身份证件按时到达。",
    ),
    (
        "reception_notice",
        "【领导接访】{{ name }}：{% if attended %}{{ leader }}已于{{ at_day }}接待您，就信访事项（案件编号 {{ case_id }}）\
的意见：{{ outcome }}。事项将继续依法办理，请凭查询码查询进度。{% else %}您预约的{{ leader }}接访（预约编号 \
{{ appointment_id }}）未到场，信访事项（案件编号 {{ case_id }}）继续依法办理；如需再次约访，请关注领导接访日安排。{% endif %}",
    ),
];

fn step_label(step: Step) -> &'static str {
    match step {
        Step::Route => "转送交办",
        Step::Objection => "管辖异议",
        Step::Acceptance => "受理告知",
        Step::Handling => "办理",
        Step::ReviewWindow => "复查申请",
        Step::Review => "复查",
        Step::RereviewWindow => "复核申请",
        Step::Rereview => "复核",
        Step::Supervision => "督办",
        Step::Directive => "督办单",
        Step::Reception => "领导接访记录",
    }
}

fn reason_label(r: RejectReason) -> (&'static str, &'static str) {
    match r {
        RejectReason::LitigationChannel => (
            "该事项属于诉讼、仲裁、行政复议等法定途径解决的范围",
            "请依照有关法律、行政法规规定的程序向有关机关提出（《信访工作条例》第三十一条）。",
        ),
        RejectReason::SameMatterInProgress => ("同一信访事项正在办理中", "请等待原事项的处理意见。"),
        RejectReason::TerminatedMatter => {
            ("该事项已经复核终结", "同一事实和理由提出的信访事项不再受理（《信访工作条例》第三十六条）。")
        }
        RejectReason::NotAPetition => ("所提事项不属于信访事项", "如有其他诉求，可向有关机关反映。"),
        RejectReason::Other => ("不符合受理条件", "如有异议，可向信访工作机构咨询。"),
    }
}

fn day(t: Instant) -> String {
    t.format("%Y年%m月%d日").to_string()
}

/// The notices `cause` (the last of `events`) calls for. `organ_name` names organs;
/// `review_window_due` is the end of the petitioner's window after an opinion, if one is open.
pub fn plan(
    cause: &Envelope,
    events: &[Envelope],
    state: &CaseState,
    organ_name: &dyn Fn(&OrganId) -> String,
    dues: &std::collections::BTreeMap<&'static str, crate::calendar::Due>,
) -> Vec<Planned> {
    let Some(registered) = registered_of(events) else { return vec![] };
    let p = &registered.petition;
    let name = p.petitioners.first().map(|x| x.name.clone()).unwrap_or_default();
    let mut base = json!({
        "case_id": cause.case_id.as_str(),
        "title": p.title,
        "name": name,
        "at": rfc3339(cause.at),
    });
    let due = |step: &str| dues.get(step).map(|d| day(d.at)).unwrap_or_default();
    let respondent = if p.kind == Kind::ComplaintReport { p.respondent_organ_id.clone() } else { None };
    let with = |base: &Value, extra: Value| {
        let mut v = base.clone();
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    };
    let to_petitioner = |template: &'static str, context: Value| Planned {
        id: cause.caused_id(&format!("{template}:petitioner")),
        template,
        recipient: Recipient::Petitioner,
        context,
    };
    let to_organ = |template: &'static str, organ: &OrganId, context: Value| -> Option<Planned> {
        // Art. 30 ¶3: nothing about a report goes to the organ it reports
        if respondent.as_ref() == Some(organ) {
            return None;
        }
        Some(Planned {
            id: cause.caused_id(&format!("{template}:{organ}")),
            template,
            recipient: Recipient::Organ(organ.clone()),
            context,
        })
    };
    let organ_ctx = |o: &OrganId| json!({"organ_id": o.as_str(), "organ_name": organ_name(o)});
    if let Some(o) = &state.organ {
        base = with(&base, organ_ctx(o));
    }
    let Ok(Some(data)) = cause.data().map(|d| d.cloned()) else { return vec![] };
    match data {
        EventData::Registered(r) => {
            let ctx = with(&base, json!({"registered_at": day(cause.at), "group": r.group}));
            vec![to_petitioner("receipt", ctx)]
        }
        EventData::Routed { organ_id, mode, assigned_due, .. } => {
            let mode = match mode {
                crate::event::RouteMode::Transfer => "转送",
                crate::event::RouteMode::Assign => "交办",
            };
            let ctx = with(
                &with(&base, organ_ctx(&organ_id)),
                json!({"mode": mode, "acceptance_due": due("acceptance"), "assigned_due": assigned_due.map(day)}),
            );
            to_organ("assignment", &organ_id, ctx).into_iter().collect()
        }
        EventData::Accepted { organ_id } => {
            let ctx = with(&with(&base, organ_ctx(&organ_id)), json!({"handling_due": due("handling")}));
            vec![to_petitioner("acceptance_notice", ctx)]
        }
        EventData::Rejected { organ_id, reason_code, note } => {
            let (reason, advice) = reason_label(reason_code);
            let ctx =
                with(&with(&base, organ_ctx(&organ_id)), json!({"reason": reason, "advice": advice, "note": note}));
            vec![to_petitioner("refusal_notice", ctx)]
        }
        EventData::Extended { days, reason, approved_by } => {
            let ctx = with(
                &base,
                json!({"days": days, "reason": reason, "approved_by": approved_by, "handling_due": due("handling")}),
            );
            vec![to_petitioner("extension_notice", ctx)]
        }
        EventData::Replied { summary, .. }
        | EventData::ReviewReplied { summary, .. }
        | EventData::RereviewReplied { summary, .. } => {
            let (opinion, next_step, window) = match cause.kind.as_str() {
                "replied" => ("处理意见书", Some("复查"), due("review_window")),
                "review_replied" => ("复查意见书", Some("复核"), due("rereview_window")),
                _ => ("复核意见书", None, String::new()),
            };
            let ctx = with(
                &base,
                json!({"opinion": opinion, "summary": summary, "next_step": next_step, "window_due": window}),
            );
            vec![to_petitioner("reply_delivery", ctx)]
        }
        EventData::Escalated { level, step, due_at, to, .. } => {
            // a step the bureau owes is reminded to the bureau the rung names; others to the organ
            let bureaus = step.is_some_and(Step::owed_by_bureau);
            let owner = if bureaus { OrganId::parse(&to).ok() } else { state.organ.clone() };
            let Some(organ) = owner else { return vec![] };
            if bureaus {
                base = with(&base, organ_ctx(&organ));
            }
            let step = step.map(step_label).unwrap_or("办理");
            let due = due_at.map(day).unwrap_or_default();
            let ctx = with(&base, json!({"step": step, "due": due}));
            let template = match level {
                EscalationLevel::Reminder => "reminder",
                EscalationLevel::Supervision => "supervision_notice",
                EscalationLevel::Parent => return vec![],
            };
            let mut out: Vec<Planned> = to_organ(template, &organ, ctx.clone()).into_iter().collect();
            // 包案: the bureau that supervises carries the reminder to the leader in charge
            if let (EscalationLevel::Supervision, Some(leader), Ok(bureau)) =
                (level, &state.leader, OrganId::parse(&to))
            {
                let ctx = with(&with(&ctx, organ_ctx(&bureau)), json!({"leader": leader.label()}));
                out.extend(to_organ("leader_reminder", &bureau, ctx));
            }
            out
        }
        EventData::AppointmentBooked { appointment_id, leader, starts_at, place, .. } => {
            let when = starts_at.format("%Y年%m月%d日 %H:%M").to_string();
            let ctx = with(
                &base,
                json!({"appointment_id": appointment_id, "leader": leader.label(), "starts_at": when, "place": place}),
            );
            vec![to_petitioner("appointment_notice", ctx)]
        }
        EventData::ReceptionRecorded { appointment_id, leader, attended, outcome, .. } => {
            let ctx = with(
                &base,
                json!({"appointment_id": appointment_id, "leader": leader.label(), "attended": attended,
                       "outcome": outcome, "at_day": day(cause.at)}),
            );
            vec![to_petitioner("reception_notice", ctx)]
        }
        _ => vec![],
    }
}

/// `138****5678`: a phone number for logs.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() < 7 {
        return "*".repeat(chars.len());
    }
    let (head, tail) = (&chars[..3], &chars[chars.len() - 4..]);
    format!("{}****{}", head.iter().collect::<String>(), tail.iter().collect::<String>())
}

/// `z***@example.cn`: an e-mail address for logs.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((user, host)) => format!("{}***@{host}", user.chars().next().unwrap_or('*')),
        None => "***".into(),
    }
}

/// `张*` / `欧阳**`: a name for logs.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => format!("{first}{}", "*".repeat(chars.count().max(1))),
        None => String::new(),
    }
}

/// A recipient address masked for logs and events: phone, e-mail, or anything else.
pub fn mask_address(address: &str) -> String {
    if address.contains('@') {
        mask_email(address)
    } else if address.chars().all(|c| c.is_ascii_digit() || c == '+') {
        mask_phone(address)
    } else {
        address.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_nothing_identifying() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_email("zhang.san@binhu.gov.cn"), "z***@binhu.gov.cn");
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳修文"), "欧***");
        assert_eq!(mask_address("13812345678"), "138****5678");
        assert_eq!(mask_address("organ:320211-zjj"), "organ:320211-zjj");
        assert_eq!(mask_phone("123"), "***");
    }

    #[test]
    fn every_template_is_named_once() {
        let mut names: Vec<&str> = TEMPLATES.iter().map(|t| t.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TEMPLATES.len());
    }

    #[test]
    fn a_breach_of_a_case_in_a_leaders_charge_reminds_the_leader_through_the_bureau() {
        use crate::fixtures;
        use crate::reception::Leader;
        let registered = fixtures::registered("e0", fixtures::at(2, 9));
        let routed = fixtures::routed(&registered, fixtures::at(2, 10));
        let leader = Leader { name: "张明".into(), title: "区长".into() };
        let charge = fixtures::event(
            "e2",
            fixtures::at(3, 9),
            "bureau",
            None,
            EventData::LeaderInCharge { leader: leader.clone(), previous: None },
        );
        let escalated = fixtures::event(
            "e3",
            fixtures::at(20, 9),
            "escalation",
            None,
            EventData::Escalated {
                level: EscalationLevel::Supervision,
                to: "320211-xfj".into(),
                due_at: Some(fixtures::at(30, 9)),
                step: Some(Step::Acceptance),
                reason: String::new(),
            },
        );
        let events = vec![registered, routed, charge, escalated.clone()];
        let state = CaseState::fold(&events).unwrap();
        let name = |o: &OrganId| o.to_string();
        let planned = plan(&escalated, &events, &state, &name, &Default::default());
        let templates: Vec<&str> = planned.iter().map(|p| p.template).collect();
        assert_eq!(templates, ["supervision_notice", "leader_reminder"]);
        assert_eq!(planned[1].recipient, Recipient::Organ(OrganId::parse("320211-xfj").unwrap()));
        assert_eq!(planned[1].context["leader"], "张明（区长）");
        // without a leader in charge, the supervision notice alone
        let mut plain = events.clone();
        plain.remove(2);
        let state = CaseState::fold(&plain).unwrap();
        assert_eq!(plan(&escalated, &plain, &state, &name, &Default::default()).len(), 1);

        let booked = fixtures::event(
            "e4",
            fixtures::at(3, 10),
            "intake",
            None,
            EventData::AppointmentBooked {
                reception_id: "R20260310-abcdef01".into(),
                appointment_id: "R20260310-abcdef01-001".into(),
                leader,
                starts_at: fixtures::at(10, 9),
                ends_at: fixtures::at(10, 11),
                place: "区信访局接待大厅".into(),
            },
        );
        let events = vec![events[0].clone(), booked.clone()];
        let state = CaseState::fold(&events).unwrap();
        let planned = plan(&booked, &events, &state, &name, &Default::default());
        assert_eq!((planned[0].template, &planned[0].recipient), ("appointment_notice", &Recipient::Petitioner));
        assert_eq!(planned[0].context["starts_at"], "2026年03月10日 09:00");
        let recorded = fixtures::event(
            "e5",
            fixtures::at(10, 11),
            "bureau",
            None,
            EventData::ReceptionRecorded {
                reception_id: "R20260310-abcdef01".into(),
                appointment_id: "R20260310-abcdef01-001".into(),
                leader: Leader { name: "张明".into(), title: "区长".into() },
                attended: true,
                outcome: "责成住建局一个月内办结".into(),
            },
        );
        let events = vec![events[0].clone(), booked, recorded.clone()];
        let state = CaseState::fold(&events).unwrap();
        let planned = plan(&recorded, &events, &state, &name, &Default::default());
        assert_eq!(
            (planned[0].template, planned[0].context["outcome"].as_str()),
            ("reception_notice", Some("责成住建局一个月内办结"))
        );
    }
}
