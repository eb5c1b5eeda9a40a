//! Events for the services' unit tests: one case of node 320211, registered,
//! routed, warned, and another service's answer to the same event. Pure, no I/O.

use chrono::TimeZone;

use crate::event::{Actor, Envelope, EventData, Registered, RegisteredDue, RouteMode};
use crate::ids::{CaseId, DivisionCode, NodeCode, OrganId};
use crate::petition::{Channel, Kind, Location, Petition, Petitioner};
use crate::time::{cst, Instant};

/// The case every fixture belongs to.
pub fn case() -> CaseId {
    CaseId::parse("320211-20260302-000001").expect("case id")
}

/// 2026-03-`day` at `hour`:00 in Shanghai.
pub fn at(day: u32, hour: u32) -> Instant {
    cst().with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
}

/// An event of [`case`] written by `actor` at `at`, caused by `causation`.
pub fn event(id: &str, at: Instant, actor: &str, causation: Option<&str>, data: EventData) -> Envelope {
    Envelope::new(
        id,
        case(),
        NodeCode::parse("320211").expect("node"),
        at,
        Actor::system(actor),
        causation.map(str::to_string),
        data,
    )
}

/// `registered` by intake: one petitioner with a phone, an appeal about housing in 320211.
pub fn registered(id: &str, at: Instant) -> Envelope {
    let petition = Petition {
        channel: Channel::Online,
        received_at: at,
        petitioners: vec![Petitioner {
            name: "张三".into(),
            id_number: None,
            phone: Some(crate::ids::Phone::parse("13812345678").expect("phone")),
            address: None,
        }],
        headcount: 1,
        location: Location { division: DivisionCode::parse("320211").expect("division"), address: None },
        category: "urban_construction".into(),
        kind: Kind::AppealRequest,
        respondent_organ_id: None,
        title: "小区电梯长期故障".into(),
        content: "请求督促维修。".into(),
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
    event(id, at, "intake", None, EventData::Registered(Box::new(data)))
}

/// Routing's `routed` to 320211-zjj, answering `cause`.
pub fn routed(cause: &Envelope, at: Instant) -> Envelope {
    let data = EventData::Routed {
        organ_id: OrganId::parse("320211-zjj").expect("organ"),
        organ_name: "滨湖区住房和城乡建设局".into(),
        level: "county".into(),
        mode: RouteMode::Transfer,
        assigned_due: None,
        rule_id: "housing".into(),
        reason: "test".into(),
    };
    event(&cause.caused_id("routed"), at, "routing", Some(&cause.event_id), data)
}

/// Notification's `notified` for notice `template` on `cause`: the answer of another service
/// to the same event, which must never count as the answer of the service under test.
pub fn notified(cause: &Envelope, template: &str) -> Envelope {
    let notice_id = cause.caused_id(&format!("{template}:petitioner"));
    let data = EventData::Notified {
        cause_event_id: cause.event_id.clone(),
        channel: "webhook".into(),
        recipient: "138****5678".into(),
        attempts: 1,
        notice_id: notice_id.clone(),
        template: template.into(),
    };
    event(&format!("{notice_id}:notified"), cause.at, "notification", Some(&cause.event_id), data)
}
