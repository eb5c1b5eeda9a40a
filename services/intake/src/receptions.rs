//! Leaders' reception days on intake (DESIGN.md §14): the bureau publishes slots, the public
//! reads the schedule and books a seat (约访) with a new petition (registered on the
//! `leader_reception` channel) or with an existing case and its query code, and the clerk
//! records who came and what the leader decided. The slot and its seats are in the agenda
//! stream; the case records its booking (`appointment_booked`) and its reception
//! (`reception_recorded`, the receiving leader on record) in its own events.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use xinfang_shared::access::{self, Caller};
use xinfang_shared::agenda::Slot;
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::event::{Actor, Envelope, EventData};
use xinfang_shared::ids::CaseId;
use xinfang_shared::ledger::{AppendError, Expect};
use xinfang_shared::petition::{Channel, Obj};
use xinfang_shared::reception::{self, appointment_id, next_seat};
use xinfang_shared::time::rfc3339;

use crate::register::unavailable;
use crate::Intake;

/// How often a booking reads the slot again after another booking took the seat it wanted.
const MAX_BOOKING_RETRIES: usize = 16;

fn no_reception(id: &str) -> ApiError {
    ApiError::general(ErrorCode::NotFound, format!("no reception {id} at this node"))
}

/// The booking a case already holds in a slot, from its events.
fn booked_in(events: &[Envelope], reception_id: &str) -> Option<String> {
    events.iter().find_map(|e| match e.data() {
        Ok(Some(EventData::AppointmentBooked { reception_id: r, appointment_id, .. })) if r == reception_id => {
            Some(appointment_id.clone())
        }
        _ => None,
    })
}

/// The clerk's record of `appointment` among a case's events: attended, the outcome, when.
pub(crate) fn record_of(
    events: &[Envelope],
    appointment: &str,
) -> Option<(bool, String, xinfang_shared::time::Instant)> {
    events.iter().find_map(|e| match e.data() {
        Ok(Some(EventData::ReceptionRecorded { appointment_id, attended, outcome, .. }))
            if appointment_id == appointment =>
        {
            Some((*attended, outcome.clone(), e.at))
        }
        _ => None,
    })
}

/// The petition of a booking for slot `reception_id`: on the `leader_reception` channel, with
/// an idempotency key from its content and the slot unless it brings one (the same petition
/// for the same slot is the same case).
fn booking_petition(reception_id: &str, petition: &Value) -> Result<Value, ApiError> {
    let mut petition = petition.clone();
    let Some(p) = petition.as_object_mut() else {
        return Err(ApiError::field(ErrorCode::InvalidField, "petition", "must be an object"));
    };
    p.insert("channel".into(), json!(Channel::LeaderReception.as_str()));
    if !p.contains_key("idempotency_key") {
        let digest = Sha256::digest(serde_json::to_vec(&*p).expect("serializes"));
        p.insert("idempotency_key".into(), json!(format!("booking:{reception_id}:{}", &hex::encode(digest)[..32])));
    }
    Ok(petition)
}

impl Intake {
    fn actor_of(caller: &Caller) -> Actor {
        match caller {
            Caller::Staff(i) => i.as_staff(),
            Caller::Public => Actor { kind: xinfang_shared::event::ActorKind::Petitioner, id: "petitioner".into() },
        }
    }

    async fn slot(&self, id: &str) -> Result<Slot, ApiError> {
        self.agenda.slot(id).await.map_err(unavailable)?.ok_or_else(|| no_reception(id))
    }

    /// `POST /v1/receptions` (bureau): publishes a slot.
    pub async fn publish_reception(&self, caller: &Caller, body: &Value) -> Result<Value, ApiError> {
        access::may_keep_agenda(caller)?;
        let now = self.clock.now();
        let r = reception::parse(body, self.ledger.node(), now)?;
        self.agenda.publish(&r, Self::actor_of(caller), now).await.map_err(unavailable)?;
        self.figures_due.notify_one();
        Ok(json!({"ok": true, "reception_id": r.reception_id}))
    }

    /// `GET /v1/receptions` (public): the slots not yet over, soonest first.
    pub async fn receptions(&self) -> Result<Value, ApiError> {
        let now = self.clock.now();
        let mut slots: Vec<Slot> =
            self.agenda.slots().await.map_err(unavailable)?.into_iter().filter(|s| s.reception.ends_at > now).collect();
        slots.sort_by_key(|s| s.reception.starts_at);
        let lines: Vec<Value> =
            slots.iter().map(|s| reception::public_view(&s.reception, s.bookings.len() as u32)).collect();
        Ok(json!({"ok": true, "receptions": lines}))
    }

    /// `GET /v1/receptions/{id}/appointments` (bureau, auditor, office): the slot and its
    /// bookings with each case's title and whether the reception is recorded.
    pub async fn appointments(&self, caller: &Caller, id: &str) -> Result<Value, ApiError> {
        access::may_read_agenda(caller)?;
        let slot = self.slot(id).await?;
        let mut lines = Vec::new();
        for (appointment, seat, case) in &slot.bookings {
            let events = self.ledger.events(case).await.map_err(unavailable)?;
            let record = record_of(&events, appointment)
                .map(|(attended, outcome, at)| json!({"attended": attended, "outcome": outcome, "at": rfc3339(at)}));
            let title = xinfang_shared::transfer::registered_of(&events).map(|r| r.petition.title.clone());
            lines.push(json!({"appointment_id": appointment, "seat": seat, "case_id": case, "title": title,
                              "recorded": record}));
        }
        Ok(json!({"ok": true, "reception": reception::public_view(&slot.reception, slot.bookings.len() as u32),
                  "appointments": lines}))
    }

    /// `POST /v1/receptions/{id}/appointments` (public or staff): books a seat for a new
    /// petition (`{"petition": {…}}`, channel `leader_reception`) or an existing case
    /// (`{"case_id", "query_code"}`). A full or begun slot is `invalid_field` `reception`.
    pub async fn book(&self, caller: &Caller, id: &str, body: &Value) -> Result<Value, ApiError> {
        let obj = Obj::root(body)?;
        obj.only(&["petition", "case_id", "query_code"])?;
        let slot = self.slot(id).await?;
        let now = self.clock.now();
        let (case, query_code) = match obj.get("petition") {
            Some(petition) => {
                let petition = booking_petition(id, petition)?;
                // a seat is checked before a new petition is registered (a full slot registers
                // nothing); a retry goes on to find the seat its case holds
                let key = petition["idempotency_key"].as_str().unwrap_or_default();
                if !self.submitted_before(key).await? {
                    next_seat(&slot.reception, slot.bookings.len() as u32, now)?;
                }
                let receipt = self.register_for(caller, &petition).await?;
                (receipt.case_id, Some(receipt.query_code))
            }
            None => {
                let case_id = obj.req_str("case_id", 64)?;
                let code = obj.req_str("query_code", 16)?;
                let case = CaseId::parse(case_id).map_err(|e| obj.invalid("case_id", e.0))?;
                let events = self.ledger.events(&case).await.map_err(unavailable)?;
                if events.is_empty() || !self.query_code_matches(&case, &events, code) {
                    return Err(ApiError::general(ErrorCode::NotFound, format!("no case {case_id} at this node")));
                }
                (case, None)
            }
        };
        let appointment = self.take_seat(caller, slot, &case).await?;
        self.figures_due.notify_one();
        let mut answer = json!({"ok": true, "appointment_id": appointment, "case_id": case});
        if let Some(code) = query_code {
            answer["query_code"] = json!(code);
        }
        Ok(answer)
    }

    /// Registers the petition of a booking ([`booking_petition`]).
    async fn register_for(&self, caller: &Caller, petition: &Value) -> Result<crate::register::Receipt, ApiError> {
        let submitted = self
            .submit_value(caller, petition, |c| match c {
                Channel::LeaderReception => Ok(()),
                _ => {
                    Err(ApiError::field(ErrorCode::InvalidField, "channel", "a booking registers on leader_reception"))
                }
            })
            .await
            .map_err(|mut e| {
                e.field = e.field.map(|f| format!("petition.{f}"));
                e
            })?;
        let outcome = if submitted.replayed { "replayed" } else { "registered" };
        self.metrics.petitions.with_label_values(&[submitted.channel.as_str(), outcome]).inc();
        Ok(submitted.receipt)
    }

    /// Takes the next seat of the slot for `case` (or finds the one it holds), and records the
    /// booking on the case.
    async fn take_seat(&self, caller: &Caller, mut slot: Slot, case: &CaseId) -> Result<String, ApiError> {
        let actor = Self::actor_of(caller);
        let rid = slot.reception.reception_id.clone();
        let events = self.ledger.events(case).await.map_err(unavailable)?;
        let mut attempts = 0;
        let appointment = loop {
            if let Some((held, _, _)) = slot.bookings.iter().find(|(_, _, c)| c == case) {
                break held.clone();
            }
            if let Some(held) = booked_in(&events, &rid) {
                break held;
            }
            let now = self.clock.now();
            let seat = next_seat(&slot.reception, slot.bookings.len() as u32, now)?;
            let appointment = appointment_id(&rid, seat);
            match self.agenda.book(&slot, &appointment, seat, case, actor.clone(), now).await {
                Ok(()) => break appointment,
                Err(AppendError::Conflict) if attempts < MAX_BOOKING_RETRIES => {
                    attempts += 1;
                    self.metrics.conflicts.with_label_values(&["book"]).inc();
                    slot = self.slot(&rid).await?;
                }
                Err(AppendError::Conflict) => {
                    return Err(ApiError::general(ErrorCode::Conflict, "the slot is being booked by many; retry"))
                }
                Err(e) => return Err(unavailable(e)),
            }
        };
        self.record_booking(&slot, &appointment, case, &events, actor).await?;
        Ok(appointment)
    }

    /// Records a seat's booking on its case (`appointment_booked`, its id derived from the
    /// appointment) unless the case's `events` hold it already: after the booking itself, and
    /// again by [`crate::figures::refresh`] for a seat whose booking a crash left unrecorded.
    pub(crate) async fn record_booking(
        &self,
        slot: &Slot,
        appointment: &str,
        case: &CaseId,
        events: &[Envelope],
        actor: Actor,
    ) -> Result<(), ApiError> {
        let r = &slot.reception;
        if booked_in(events, &r.reception_id).is_some() {
            return Ok(());
        }
        let data = EventData::AppointmentBooked {
            reception_id: r.reception_id.clone(),
            appointment_id: appointment.to_string(),
            leader: r.leader.clone(),
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            place: r.place.clone(),
        };
        let now = self.clock.now();
        let at = now.max(events.last().map_or(now, |e| e.at));
        let id = format!("{appointment}:appointment_booked");
        let event = Envelope::new(id, case.clone(), self.ledger.node().clone(), at, actor, None, data);
        self.ledger.append(&event, Expect::Any).await.map_err(unavailable)?;
        Ok(())
    }

    /// `POST /v1/receptions/{id}/appointments/{appointment}` (bureau): the clerk's record of
    /// the reception — `attended` and the leader's `outcome`.
    pub async fn record_reception(
        &self,
        caller: &Caller,
        id: &str,
        appointment: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        access::may_keep_agenda(caller)?;
        let obj = Obj::root(body)?;
        obj.only(&["attended", "outcome"])?;
        let attended = obj
            .get("attended")
            .ok_or_else(|| obj.missing("attended"))?
            .as_bool()
            .ok_or_else(|| obj.invalid("attended", "must be true or false"))?;
        let outcome = obj.opt_str("outcome", 2000)?.unwrap_or_default().trim().to_string();
        if attended && outcome.is_empty() {
            return Err(obj.invalid("outcome", "what the leader decided is recorded when the petitioner came"));
        }
        let slot = self.slot(id).await?;
        let Some((_, _, case)) = slot.bookings.iter().find(|(a, _, _)| a == appointment) else {
            return Err(ApiError::general(ErrorCode::NotFound, format!("no appointment {appointment} in {id}")));
        };
        let events = self.ledger.events(case).await.map_err(unavailable)?;
        let event_id = format!("{appointment}:reception_recorded");
        if events.iter().any(|e| e.event_id == event_id) {
            return Err(ApiError::general(ErrorCode::InvalidTransition, format!("{appointment} is already recorded")));
        }
        let now = self.clock.now();
        let at = now.max(events.last().map_or(now, |e| e.at));
        let data = EventData::ReceptionRecorded {
            reception_id: id.to_string(),
            appointment_id: appointment.to_string(),
            leader: slot.reception.leader.clone(),
            attended,
            outcome,
        };
        let event =
            Envelope::new(event_id, case.clone(), self.ledger.node().clone(), at, Self::actor_of(caller), None, data);
        self.ledger.append(&event, Expect::Any).await.map_err(unavailable)?;
        self.figures_due.notify_one();
        Ok(json!({"ok": true, "case_id": case, "appointment_id": appointment}))
    }
}
