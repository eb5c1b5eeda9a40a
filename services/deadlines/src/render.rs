//! The wire form of `deadline_warned` and `deadline_breached`, written straight into bytes.
//!
//! A burst of firings is bound by how fast the events reach the ledger, and the service
//! shares the machine's cores with nats-server: building each [`Envelope`] through a JSON
//! `Value` and formatting its two instants costs about 4 µs per event, this about 1 µs. The
//! bytes are the same as `Envelope::new(…).to_bytes()` (the tests check it), so readers see
//! no difference.

use xinfang_shared::event::Step;
use xinfang_shared::ids::{CaseId, NodeCode};
use xinfang_shared::time::Instant;

use crate::timers::Kind;

/// Renders the events of one firing round: every event has the same `at` and most share a
/// due instant, so both are formatted once.
pub struct Renderer {
    /// `,"node":"…","at":"…","actor":{"kind":"system","id":"deadlines"},"causation_id":null,"data":{"due_at":`
    middle: String,
    due: Option<(Instant, String)>,
}

impl Renderer {
    /// A renderer for events of `node` written at `at`.
    pub fn new(node: &NodeCode, at: Instant) -> Self {
        let middle = format!(
            r#","node":{},"at":{},"actor":{{"kind":"system","id":"deadlines"}},"causation_id":null,"data":{{"due_at":"#,
            json(node.as_str()),
            json(&at),
        );
        Self { middle, due: None }
    }

    /// The bytes of a warning or breach: `{"event_id",…,"data":{"due_at","provisional","step"}}`.
    pub fn deadline(
        &mut self,
        event_id: &str,
        case: &CaseId,
        kind: Kind,
        step: Step,
        due_at: Instant,
        provisional: bool,
    ) -> Vec<u8> {
        if self.due.as_ref().is_none_or(|(at, _)| *at != due_at || at.offset() != due_at.offset()) {
            self.due = Some((due_at, json(&due_at)));
        }
        let due = self.due.as_ref().map(|(_, s)| s.as_str()).unwrap_or_default();
        let mut out = Vec::with_capacity(360);
        out.extend_from_slice(br#"{"event_id":"#);
        out.extend_from_slice(json(event_id).as_bytes());
        out.extend_from_slice(br#","case_id":"#);
        out.extend_from_slice(json(case.as_str()).as_bytes());
        out.extend_from_slice(br#","type":""#);
        out.extend_from_slice(kind.event_type().as_bytes());
        out.push(b'"');
        out.extend_from_slice(self.middle.as_bytes());
        out.extend_from_slice(due.as_bytes());
        out.extend_from_slice(if provisional { br#","provisional":true"# } else { br#","provisional":false"# });
        out.extend_from_slice(br#","step":""#);
        out.extend_from_slice(step.name().as_bytes());
        out.extend_from_slice(br#""}}"#);
        out
    }
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("strings and instants serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use xinfang_shared::event::{Actor, Envelope, EventData};
    use xinfang_shared::time::cst;

    fn envelope(id: &str, case: &CaseId, at: Instant, kind: Kind, step: Step, due_at: Instant, p: bool) -> Vec<u8> {
        let data = match kind {
            Kind::Warned => EventData::DeadlineWarned { step, due_at, provisional: p },
            Kind::Breached => EventData::DeadlineBreached { step, due_at, provisional: p },
        };
        let node = NodeCode::parse("320211").unwrap();
        Envelope::new(id, case.clone(), node, at, Actor::system("deadlines"), None, data).to_bytes().to_vec()
    }

    #[test]
    fn renders_the_bytes_an_envelope_would() {
        let node = NodeCode::parse("320211").unwrap();
        let case = CaseId::parse("320211-20261127-000042").unwrap();
        let whole = cst().with_ymd_and_hms(2026, 11, 28, 10, 15, 0).unwrap();
        let ats = [whole, whole + chrono::Duration::milliseconds(123), whole + chrono::Duration::nanoseconds(4567)];
        let dues = [
            cst().with_ymd_and_hms(2026, 12, 18, 23, 59, 59).unwrap(),
            chrono::Utc.with_ymd_and_hms(2026, 12, 18, 15, 59, 59).unwrap().fixed_offset(),
            whole + chrono::Duration::milliseconds(5),
        ];
        let steps = [Step::Route, Step::Acceptance, Step::ReviewWindow, Step::Rereview, Step::Supervision];
        for at in ats {
            let mut renderer = Renderer::new(&node, at);
            for due in dues {
                for step in steps {
                    for kind in [Kind::Warned, Kind::Breached] {
                        for p in [false, true] {
                            let id = format!("{case}:{}:{}:x\"y", step.name(), due.timestamp());
                            let got = renderer.deadline(&id, &case, kind, step, due, p);
                            let want = envelope(&id, &case, at, kind, step, due, p);
                            assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
                        }
                    }
                }
            }
        }
    }
}
