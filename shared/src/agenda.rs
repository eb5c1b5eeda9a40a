//! The node's agenda (`XF_AGENDA_N`, subjects `xf.N.agenda.>`): the bureau's records that
//! are not one case's — reception slots published, seats booked in them, campaigns opened.
//! A ledger like the case stream (file storage, no deletes, deduplicated by record id); each
//! case keeps its own side of a booking, a reception or a campaign in its events.
//!
//! Seats are taken under optimistic concurrency on the slot's subjects
//! (`Nats-Expected-Last-Subject-Sequence` over `xf.N.agenda.reception.<id>.>`), so a slot
//! never holds more bookings than its capacity, whatever the number of intake replicas.

use async_nats::jetstream::{stream, Context};
use serde::{Deserialize, Serialize};

use crate::campaign::Campaign;
use crate::event::Actor;
use crate::ids::{CaseId, NodeCode};
use crate::ledger::{
    duplicate_window, ensure_stream, headers, publish_acked, scan_stream, AppendError, Outgoing, ReadError,
};
use crate::reception::Reception;
use crate::time::Instant;

/// One record's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Entry {
    ReceptionPublished(Reception),
    SeatBooked { reception_id: String, appointment_id: String, seat: u32, case_id: CaseId },
    CampaignOpened(Campaign),
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub at: Instant,
    pub actor: Actor,
    #[serde(flatten)]
    pub entry: Entry,
}

/// A slot with its bookings, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub reception: Reception,
    /// (appointment id, seat, case), in booking order.
    pub bookings: Vec<(String, u32, CaseId)>,
    /// The stream sequence of the slot's latest record (the concurrency check of a booking).
    pub last_seq: u64,
}

/// `XF_AGENDA_N`.
pub fn stream_name(node: &NodeCode) -> String {
    format!("XF_AGENDA_{node}")
}

fn reception_subject(node: &NodeCode, reception: &str, what: &str) -> String {
    format!("xf.{node}.agenda.reception.{reception}.{what}")
}

/// The node's agenda stream.
#[derive(Clone)]
pub struct Agenda {
    js: Context,
    node: NodeCode,
    stream: String,
}

impl Agenda {
    /// Opens the agenda, creating the stream where it is missing (`replicas` as `nats.replicas`).
    pub async fn open(js: Context, node: NodeCode, replicas: usize) -> Result<Self, ReadError> {
        let stream = stream_name(&node);
        ensure_stream(
            &js,
            stream::Config {
                num_replicas: replicas,
                name: stream.clone(),
                description: Some(format!("reception days, appointments and campaigns of node {node}")),
                subjects: vec![format!("xf.{node}.agenda.>")],
                storage: stream::StorageType::File,
                duplicate_window: duplicate_window(),
                deny_delete: true,
                deny_purge: true,
                allow_direct: true,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self { js, node, stream })
    }

    /// The node.
    pub fn node(&self) -> &NodeCode {
        &self.node
    }

    async fn append(
        &self,
        subject: String,
        record: &Record,
        expect: Option<(u64, String)>,
    ) -> Result<u64, AppendError> {
        let kind = subject.rsplit('.').next().unwrap_or_default().to_string();
        let mut h = headers(&record.id, &kind);
        if let Some((seq, filter)) = expect {
            h.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string().as_str());
            h.insert("Nats-Expected-Last-Subject-Sequence-Subject", filter.as_str());
        }
        let payload = serde_json::to_vec(record).expect("records serialize").into();
        publish_acked(&self.js, Outgoing { subject, headers: h, payload }).await
    }

    /// Every record under `filter` (a subject below `xf.N.agenda.`), oldest first, with its
    /// stream sequence.
    async fn read(&self, filter: &str) -> Result<Vec<(u64, Record)>, ReadError> {
        let mut out = Vec::new();
        scan_stream(&self.js, &self.stream, format!("xf.{}.agenda.{filter}", self.node), |seq, _, bytes| {
            match serde_json::from_slice::<Record>(bytes) {
                Ok(r) => out.push((seq, r)),
                Err(e) => tracing::warn!(seq, error = %e, "skipping an unreadable agenda record"),
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Publishes a slot (a second publication of the same slot changes nothing).
    pub async fn publish(&self, reception: &Reception, actor: Actor, at: Instant) -> Result<(), AppendError> {
        let record = Record {
            id: format!("{}:published", reception.reception_id),
            at,
            actor,
            entry: Entry::ReceptionPublished(reception.clone()),
        };
        self.append(reception_subject(&self.node, &reception.reception_id, "published"), &record, None).await?;
        Ok(())
    }

    /// Every slot with its bookings, in order of publication.
    pub async fn slots(&self) -> Result<Vec<Slot>, ReadError> {
        Ok(slots_of(self.read("reception.>").await?))
    }

    /// One slot, if published.
    pub async fn slot(&self, reception_id: &str) -> Result<Option<Slot>, ReadError> {
        if reception_id.is_empty() || !reception_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Ok(None);
        }
        Ok(slots_of(self.read(&format!("reception.{reception_id}.>")).await?).into_iter().next())
    }

    /// Takes `seat` of `slot` for `case` if no one wrote to the slot since it was read
    /// ([`AppendError::Conflict`] otherwise: read again and retry).
    pub async fn book(
        &self,
        slot: &Slot,
        appointment_id: &str,
        seat: u32,
        case: &CaseId,
        actor: Actor,
        at: Instant,
    ) -> Result<(), AppendError> {
        let rid = &slot.reception.reception_id;
        let record = Record {
            id: appointment_id.to_string(),
            at,
            actor,
            entry: Entry::SeatBooked {
                reception_id: rid.clone(),
                appointment_id: appointment_id.to_string(),
                seat,
                case_id: case.clone(),
            },
        };
        let filter = reception_subject(&self.node, rid, ">");
        self.append(reception_subject(&self.node, rid, "booked"), &record, Some((slot.last_seq, filter))).await?;
        Ok(())
    }

    /// Opens a campaign (opening the same one again changes nothing).
    pub async fn open_campaign(&self, campaign: &Campaign, actor: Actor, at: Instant) -> Result<(), AppendError> {
        let record = Record {
            id: format!("{}:opened", campaign.campaign_id),
            at,
            actor,
            entry: Entry::CampaignOpened(campaign.clone()),
        };
        self.append(format!("xf.{}.agenda.campaign.{}.opened", self.node, campaign.campaign_id), &record, None).await?;
        Ok(())
    }

    /// Every campaign opened at this node, oldest first.
    pub async fn campaigns(&self) -> Result<Vec<Campaign>, ReadError> {
        let mut out: Vec<Campaign> = Vec::new();
        for (_, r) in self.read("campaign.>").await? {
            if let Entry::CampaignOpened(c) = r.entry {
                if !out.iter().any(|x| x.campaign_id == c.campaign_id) {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }
}

/// Folds reception records into slots: the first publication of a slot counts, bookings of
/// a seat once.
fn slots_of(records: Vec<(u64, Record)>) -> Vec<Slot> {
    let mut slots: Vec<Slot> = Vec::new();
    for (seq, r) in records {
        match r.entry {
            Entry::ReceptionPublished(reception) => {
                match slots.iter_mut().find(|s| s.reception.reception_id == reception.reception_id) {
                    Some(s) => s.last_seq = seq,
                    None => slots.push(Slot { reception, bookings: Vec::new(), last_seq: seq }),
                }
            }
            Entry::SeatBooked { reception_id, appointment_id, seat, case_id } => {
                if let Some(s) = slots.iter_mut().find(|s| s.reception.reception_id == reception_id) {
                    s.last_seq = seq;
                    if !s.bookings.iter().any(|(id, _, _)| *id == appointment_id) {
                        s.bookings.push((appointment_id, seat, case_id));
                    }
                }
            }
            Entry::CampaignOpened(_) => {}
        }
    }
    slots
}
