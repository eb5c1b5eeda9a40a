//! The ledger's events (DESIGN.md §3): one envelope, typed data per event type. Consumers read
//! the envelope first and parse the data only for the types they know, so unknown types from
//! newer writers are skipped, not failed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{CaseId, NodeCode, OrganId};
use crate::petition::Petition;
use crate::reception::Leader;
use crate::time::Instant;

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    System,
    Staff,
    Petitioner,
    Organ,
}

/// `{"kind","id"}` — the actor of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

impl Actor {
    /// A service of this system, e.g. `intake`.
    pub fn system(service: &str) -> Self {
        Self { kind: ActorKind::System, id: service.to_string() }
    }
}

/// The envelope every event is written in. `data` stays raw JSON here; [`Envelope::data`]
/// parses it into an [`EventData`] when the type is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique; also the `Nats-Msg-Id`.
    pub event_id: String,
    pub case_id: CaseId,
    #[serde(rename = "type")]
    pub kind: String,
    /// Node that wrote it.
    pub node: NodeCode,
    #[serde(deserialize_with = "crate::time::read_instant")]
    pub at: Instant,
    pub actor: Actor,
    /// The staff who recorded the action for `actor` (a clerk entering a paper reply, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_by: Option<Actor>,
    #[serde(default)]
    pub causation_id: Option<String>,
    #[serde(default)]
    pub data: Value,
    /// `data` as typed by the first [`Envelope::data`] call (not on the wire). A case's
    /// history is read by many rules, each looking at the data of many events; parsing it once
    /// per event cut a replay's time by more than a third (issue 18). Set `kind` and `data` before
    /// reading the typed data: it is not parsed again after they change.
    #[serde(skip)]
    pub typed: TypedData,
}

/// The cache behind [`Envelope::data`]: empty until first read, and never part of an
/// envelope's equality (that is its wire form).
#[derive(Clone, Default)]
pub struct TypedData(std::sync::OnceLock<Option<EventData>>);

impl PartialEq for TypedData {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for TypedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TypedData")
    }
}

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Envelope {
    /// Builds an envelope around typed data.
    pub fn new(
        event_id: impl Into<String>,
        case_id: CaseId,
        node: NodeCode,
        at: Instant,
        actor: Actor,
        causation_id: Option<String>,
        data: EventData,
    ) -> Self {
        let (kind, data) = data.into_parts();
        Self {
            event_id: event_id.into(),
            case_id,
            kind,
            node,
            at,
            actor,
            recorded_by: None,
            causation_id,
            data,
            typed: TypedData::default(),
        }
    }

    /// Parses the wire form.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, EventError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Parses the wire form for rules only (a rebuild's replay): the typed data straight from
    /// the bytes, `data` left `null` — less work than [`Envelope::from_slice`], which builds
    /// `data` as JSON first. Never write such an envelope back or show it.
    pub fn for_rules(bytes: &[u8]) -> Result<Self, EventError> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            event_id: String,
            case_id: CaseId,
            #[serde(rename = "type")]
            kind: String,
            node: NodeCode,
            #[serde(deserialize_with = "crate::time::read_instant")]
            at: Instant,
            actor: Actor,
            #[serde(default)]
            recorded_by: Option<Actor>,
            #[serde(default)]
            causation_id: Option<String>,
            #[serde(borrow, default)]
            data: Option<&'a serde_json::value::RawValue>,
        }
        let w: Wire = serde_json::from_slice(bytes)?;
        let typed = match w.data {
            // the envelope as an adjacently tagged `EventData`: its other fields are skipped,
            // and as `type` comes before `data` the data is read straight into its variant
            Some(_) if EventData::KNOWN.contains(&w.kind.as_str()) => Some(serde_json::from_slice::<EventData>(bytes)?),
            _ => None,
        };
        Ok(Self {
            event_id: w.event_id,
            case_id: w.case_id,
            kind: w.kind,
            node: w.node,
            at: w.at,
            actor: w.actor,
            recorded_by: w.recorded_by,
            causation_id: w.causation_id,
            data: Value::Null,
            typed: TypedData(std::sync::OnceLock::from(typed)),
        })
    }

    /// The wire form.
    pub fn to_bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self).expect("events serialize").into()
    }

    /// The typed data, parsed on the first call and kept: `Ok(None)` for a type this build
    /// does not know.
    pub fn data(&self) -> Result<Option<&EventData>, EventError> {
        if let Some(typed) = self.typed.0.get() {
            return Ok(typed.as_ref());
        }
        let parsed = self.parse_data()?;
        Ok(self.typed.0.get_or_init(|| parsed).as_ref())
    }

    fn parse_data(&self) -> Result<Option<EventData>, EventError> {
        if !EventData::KNOWN.contains(&self.kind.as_str()) {
            return Ok(None);
        }
        // the tag first: serde then reads the data straight into its variant (a JSON object
        // built with both would put `data` first, and serde would buffer it to look for the tag)
        let kind = Value::String(self.kind.clone());
        let tagged = [("type", &kind), ("data", &self.data)];
        let map = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(tagged.into_iter());
        Ok(Some(EventData::deserialize(map)?))
    }

    /// A deterministic id for an event caused by this one (DESIGN.md §3).
    pub fn caused_id(&self, what: &str) -> String {
        format!("{}:{what}", self.event_id)
    }
}

/// Whether `events` already hold one of `own_ids`: how a service recognises its own answer to a
/// trigger — by the ids it derives for what it writes ([`Envelope::caused_id`]), never by "some
/// event names the trigger as its cause". Several services answer the same trigger (routing
/// and notification both answer `registered`); one's answer must not silence another's.
pub fn answered<S: AsRef<str>>(events: &[Envelope], own_ids: &[S]) -> bool {
    events.iter().any(|e| own_ids.iter().any(|id| e.event_id == id.as_ref()))
}

/// A case's events up to and including the one with id `event_id` (all of them if it is not
/// there): the case as it stood when that event was written.
pub fn until<'a>(events: &'a [Envelope], event_id: &str) -> &'a [Envelope] {
    let end = events.iter().position(|e| e.event_id == event_id).map_or(events.len(), |i| i + 1);
    &events[..end]
}

/// 转送 (transfer) or 交办 (assign with a set deadline and a required report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    Transfer,
    Assign,
}

/// Refusal reasons (DESIGN.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// 诉访分离: belongs to court, arbitration or administrative review.
    LitigationChannel,
    SameMatterInProgress,
    /// After re-review the same matter is not accepted again (Art. 36 ¶3).
    TerminatedMatter,
    NotAPetition,
    Other,
}

/// The handling opinion's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Supported,
    PartlySupported,
    NotSupported,
    Explained,
}

/// The petitioner's evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Satisfaction {
    Satisfied,
    BasicallySatisfied,
    Unsatisfied,
}

/// A step with a timer (DOMAIN.md "Deadlines").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Route,
    Objection,
    Acceptance,
    Handling,
    ReviewWindow,
    Review,
    RereviewWindow,
    Rereview,
    Supervision,
    /// A directive (督办单) from the parent node, due by its own date.
    Directive,
    /// The record of a booked leader's reception, due from the bureau one working day after
    /// the slot ends.
    Reception,
}

impl Step {
    /// Every step, in declaration order. A step's position here is its one-byte code in stores
    /// ([`Step::code`]): new steps go at the end.
    pub const ALL: [Step; 11] = [
        Self::Route,
        Self::Objection,
        Self::Acceptance,
        Self::Handling,
        Self::ReviewWindow,
        Self::Review,
        Self::RereviewWindow,
        Self::Rereview,
        Self::Supervision,
        Self::Directive,
        Self::Reception,
    ];

    /// Its one-byte code in stores: its position in [`Step::ALL`].
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|s| *s == self).expect("every step is in Step::ALL") as u8
    }

    /// The step with that code.
    pub fn from_code(code: u8) -> Option<Step> {
        Self::ALL.get(code as usize).copied()
    }

    /// Whether the node's petition bureau owes the step itself (a reception's record), not the
    /// organ the case is with: its reminders go to the bureau.
    pub fn owed_by_bureau(self) -> bool {
        matches!(self, Self::Reception)
    }

    /// The wire name (`route`, `acceptance`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Objection => "objection",
            Self::Acceptance => "acceptance",
            Self::Handling => "handling",
            Self::ReviewWindow => "review_window",
            Self::Review => "review",
            Self::RereviewWindow => "rereview_window",
            Self::Rereview => "rereview",
            Self::Supervision => "supervision",
            Self::Directive => "directive",
            Self::Reception => "reception",
        }
    }
}

/// Rungs of the supervision ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationLevel {
    Reminder,
    Supervision,
    Parent,
}

/// Due dates known when a case is registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredDue {
    pub route: Instant,
    #[serde(default)]
    pub provisional: bool,
}

/// `registered`: the petition as validated, plus what intake derived from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RegisteredWire")]
pub struct Registered {
    #[serde(flatten)]
    pub petition: Petition,
    /// Keyed hash of the query code; the code itself is never stored in the clear.
    pub query_code_hash: String,
    /// The query code sealed with the node secret (`s1.…`), for the receipt notice: kept in
    /// the event so that a registration is one durable write (cases from before it have the
    /// sealed code in KV `XF_CODES_N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_code_sealed: Option<String>,
    #[serde(default)]
    pub repeat_of: Option<CaseId>,
    /// 集体访: headcount ≥ 5.
    pub group: bool,
    pub urgent: bool,
    #[serde(default)]
    pub urgent_reasons: Vec<String>,
    /// Keyed hashes of the petitioners' ID numbers, for repeat matching.
    #[serde(default)]
    pub petitioner_keys: Vec<String>,
    /// `repeat_of` is a terminated case: the same matter is not accepted again (Art. 36 ¶3);
    /// the organ refuses it with `terminated_matter`.
    #[serde(default)]
    pub terminated_matter: bool,
    pub due: RegisteredDue,
}

/// [`Registered`] as read: the petition's fields named one by one where the type flattens them.
/// serde reads a flattened struct through a buffer of every field it does not know, which made
/// `registered` the slowest event to read; this reads each field straight into place. The
/// round-trip test `registered_reads_back_as_written` keeps the two field lists together.
#[derive(Deserialize)]
struct RegisteredWire {
    channel: crate::petition::Channel,
    received_at: Instant,
    petitioners: Vec<crate::petition::Petitioner>,
    headcount: u32,
    location: crate::petition::Location,
    category: String,
    kind: crate::petition::Kind,
    #[serde(default)]
    respondent_organ_id: Option<OrganId>,
    title: String,
    content: String,
    query_code_hash: String,
    #[serde(default)]
    query_code_sealed: Option<String>,
    #[serde(default)]
    repeat_of: Option<CaseId>,
    group: bool,
    urgent: bool,
    #[serde(default)]
    urgent_reasons: Vec<String>,
    #[serde(default)]
    petitioner_keys: Vec<String>,
    #[serde(default)]
    terminated_matter: bool,
    due: RegisteredDue,
}

impl From<RegisteredWire> for Registered {
    fn from(w: RegisteredWire) -> Self {
        Self {
            petition: Petition {
                channel: w.channel,
                received_at: w.received_at,
                petitioners: w.petitioners,
                headcount: w.headcount,
                location: w.location,
                category: w.category,
                kind: w.kind,
                respondent_organ_id: w.respondent_organ_id,
                title: w.title,
                content: w.content,
            },
            query_code_hash: w.query_code_hash,
            query_code_sealed: w.query_code_sealed,
            repeat_of: w.repeat_of,
            group: w.group,
            urgent: w.urgent,
            urgent_reasons: w.urgent_reasons,
            petitioner_keys: w.petitioner_keys,
            terminated_matter: w.terminated_matter,
            due: w.due,
        }
    }
}

/// Typed event data, one variant per type of DESIGN.md §3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventData {
    Registered(Box<Registered>),
    Routed {
        organ_id: OrganId,
        organ_name: String,
        level: String,
        mode: RouteMode,
        #[serde(default)]
        assigned_due: Option<Instant>,
        rule_id: String,
        reason: String,
    },
    Forwarded {
        to_node: NodeCode,
        reason: String,
    },
    TransferredIn {
        from_node: NodeCode,
        /// The case's events so far at the sending node.
        snapshot: Vec<Value>,
        /// The organ here that should take it, when the sender named one (review one level up).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        organ_id: Option<OrganId>,
    },
    Accepted {
        organ_id: OrganId,
    },
    Rejected {
        organ_id: OrganId,
        reason_code: RejectReason,
        #[serde(default)]
        note: String,
    },
    JurisdictionDeclined {
        organ_id: OrganId,
        #[serde(default)]
        suggested_organ_id: Option<OrganId>,
        #[serde(default)]
        note: String,
    },
    Extended {
        days: u32,
        reason: String,
        approved_by: String,
    },
    Replied {
        outcome: Outcome,
        summary: String,
    },
    Evaluated {
        satisfaction: Satisfaction,
    },
    ReviewRequested {
        #[serde(default)]
        reason: String,
    },
    ReviewReplied {
        outcome: Outcome,
        summary: String,
    },
    RereviewRequested {
        #[serde(default)]
        reason: String,
    },
    RereviewReplied {
        outcome: Outcome,
        summary: String,
    },
    HearingStarted {},
    HearingEnded {},
    DeadlineWarned {
        step: Step,
        due_at: Instant,
        #[serde(default)]
        provisional: bool,
    },
    DeadlineBreached {
        step: Step,
        due_at: Instant,
        #[serde(default)]
        provisional: bool,
    },
    /// A provisional due moved because the holiday schedule of its year was loaded.
    DueRecomputed {
        step: Step,
        previous_due_at: Instant,
        due_at: Instant,
        #[serde(default)]
        provisional: bool,
    },
    Closed {
        reason: String,
    },
    Terminated {},
    Escalated {
        level: EscalationLevel,
        to: String,
        #[serde(default)]
        due_at: Option<Instant>,
        /// The late step that caused it, if any (a supervision lasts while that step is open).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<Step>,
        /// Why, in words a clerk reads.
        #[serde(default)]
        reason: String,
    },
    DirectiveReceived {
        text: String,
        due_at: Instant,
        /// The parent's id of the directive, and of the escalation it answers.
        #[serde(default)]
        directive_id: String,
        #[serde(default)]
        escalation_id: String,
        #[serde(default)]
        from_node: Option<NodeCode>,
    },
    /// The parent node's office acknowledged an escalation (its receipt is on record).
    EscalationAcknowledged {
        escalation_id: String,
        by: String,
        #[serde(default)]
        from_node: Option<NodeCode>,
    },
    /// 包案: a leader takes personal charge of the case (taking it over from `previous`).
    LeaderInCharge {
        leader: Leader,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<Leader>,
    },
    /// The leader in charge lets the case go.
    LeaderReleased {
        leader: Leader,
        #[serde(default)]
        reason: String,
    },
    /// 约访: the petitioner holds a seat at a leader's reception.
    AppointmentBooked {
        reception_id: String,
        appointment_id: String,
        leader: Leader,
        starts_at: Instant,
        ends_at: Instant,
        place: String,
    },
    /// The clerk's record of the reception: whether the petitioner came, and what the leader
    /// decided (the receiving leader is then on record).
    ReceptionRecorded {
        reception_id: String,
        appointment_id: String,
        leader: Leader,
        attended: bool,
        #[serde(default)]
        outcome: String,
    },
    /// The case is part of a campaign (积案 / 突出问题).
    CampaignMarked {
        campaign_id: String,
        name: String,
    },
    Notified {
        cause_event_id: String,
        channel: String,
        recipient: String,
        attempts: u32,
        #[serde(default)]
        notice_id: String,
        #[serde(default)]
        template: String,
    },
    NotificationFailed {
        cause_event_id: String,
        channel: String,
        recipient: String,
        attempts: u32,
        #[serde(default)]
        notice_id: String,
        #[serde(default)]
        template: String,
    },
}

impl EventData {
    /// Every type name this build knows.
    pub const KNOWN: &'static [&'static str] = &[
        "registered",
        "routed",
        "forwarded",
        "transferred_in",
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
        "deadline_warned",
        "deadline_breached",
        "due_recomputed",
        "closed",
        "terminated",
        "escalated",
        "directive_received",
        "escalation_acknowledged",
        "leader_in_charge",
        "leader_released",
        "appointment_booked",
        "reception_recorded",
        "campaign_marked",
        "notified",
        "notification_failed",
    ];

    /// The type name and the data object.
    pub fn into_parts(self) -> (String, Value) {
        let mut v = serde_json::to_value(self).expect("event data serializes");
        let kind = v["type"].as_str().expect("tagged").to_string();
        let data = v.get_mut("data").map(Value::take).unwrap_or_else(|| serde_json::json!({}));
        (kind, data)
    }

    /// The type name.
    pub fn kind(&self) -> String {
        self.clone().into_parts().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::cst;
    use chrono::TimeZone;

    fn env(data: EventData) -> Envelope {
        Envelope::new(
            "01TEST",
            CaseId::parse("320211-20261127-000042").unwrap(),
            NodeCode::parse("320211").unwrap(),
            cst().with_ymd_and_hms(2026, 11, 27, 10, 15, 0).unwrap(),
            Actor::system("test"),
            None,
            data,
        )
    }

    #[test]
    fn an_answer_is_recognised_by_its_own_id_not_by_its_cause() {
        let trigger = env(EventData::Accepted { organ_id: OrganId::parse("320211-zjj").unwrap() });
        let mut foreign = env(EventData::Closed { reason: "withdrawn".into() });
        foreign.event_id = trigger.caused_id("someone_else");
        foreign.causation_id = Some(trigger.event_id.clone());
        let own = [trigger.caused_id("routed"), trigger.caused_id("forwarded")];
        assert!(!answered(&[trigger.clone(), foreign.clone()], &own), "another service's answer is not ours");
        let mut mine = foreign.clone();
        mine.event_id = trigger.caused_id("forwarded");
        assert!(answered(&[trigger, foreign, mine], &own));
    }

    #[test]
    fn wire_form_matches_the_design() {
        let e = env(EventData::Accepted { organ_id: OrganId::parse("320211-zjj").unwrap() });
        let v: Value = serde_json::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(v["type"], "accepted");
        assert_eq!(v["at"], "2026-11-27T10:15:00+08:00");
        assert_eq!(v["actor"]["kind"], "system");
        assert_eq!(v["data"]["organ_id"], "320211-zjj");
        let back = Envelope::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            back.data().unwrap(),
            Some(&EventData::Accepted { organ_id: OrganId::parse("320211-zjj").unwrap() })
        );
    }

    #[test]
    fn registered_reads_back_as_written() {
        use crate::petition::{Channel, Kind, Location, Petitioner};
        let at = cst().with_ymd_and_hms(2026, 11, 27, 10, 15, 0).unwrap();
        let full = Registered {
            petition: Petition {
                channel: Channel::Visit,
                received_at: at,
                petitioners: vec![Petitioner {
                    name: "张三".into(),
                    id_number: None,
                    phone: Some(crate::ids::Phone::parse("13812345678").unwrap()),
                    address: Some("人民路1号".into()),
                }],
                headcount: 6,
                location: Location {
                    division: crate::ids::DivisionCode::parse("320211").unwrap(),
                    address: Some("人民路".into()),
                },
                category: "urban_construction".into(),
                kind: Kind::AppealRequest,
                respondent_organ_id: Some(OrganId::parse("320211-zjj").unwrap()),
                title: "标题".into(),
                content: "内容".into(),
            },
            query_code_hash: "h".into(),
            query_code_sealed: Some("s1.x".into()),
            repeat_of: Some(CaseId::parse("320211-20261101-000001").unwrap()),
            group: true,
            urgent: true,
            urgent_reasons: vec!["group".into()],
            petitioner_keys: vec!["k".into()],
            terminated_matter: true,
            due: RegisteredDue { route: at, provisional: true },
        };
        let e = env(EventData::Registered(Box::new(full.clone())));
        let back = Envelope::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(back.data().unwrap(), Some(&EventData::Registered(Box::new(full.clone()))));
        let rules = Envelope::for_rules(&e.to_bytes()).unwrap();
        assert_eq!(rules.data().unwrap(), Some(&EventData::Registered(Box::new(full))));
        assert_eq!((&rules.event_id, &rules.case_id, rules.at), (&e.event_id, &e.case_id, e.at));
        // an instant written another way than RFC 3339 still reads
        let mut v: Value = serde_json::from_slice(&e.to_bytes()).unwrap();
        v["at"] = "2026-11-27 10:15:00 +08:00".into();
        assert_eq!(serde_json::from_value::<Envelope>(v).unwrap().at, at);
    }

    #[test]
    fn every_known_type_round_trips_its_name() {
        let e = env(EventData::HearingStarted {});
        assert_eq!(e.kind, "hearing_started");
        assert_eq!(e.data, serde_json::json!({}));
        assert!(EventData::KNOWN.contains(&"notification_failed"));
    }

    #[test]
    fn unknown_types_are_skipped_and_extra_fields_ignored() {
        let mut e = env(EventData::Closed { reason: "withdrawn".into() });
        e.kind = "teleported".into();
        assert!(e.data().unwrap().is_none());
        let mut e = env(EventData::Closed { reason: "withdrawn".into() });
        e.data["added_in_v2"] = serde_json::json!(true);
        assert!(e.data().unwrap().is_some());
    }
}
