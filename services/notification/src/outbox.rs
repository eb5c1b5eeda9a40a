//! The delivery outbox in sled (a projection of the ledger: `o/<notice_id>` → [`Pending`]).
//!
//! Planning: each ledger event that calls for notices ([`xinfang_shared::notice::plan`]) puts
//! them in the outbox, rendered, in the same batch that records the event as applied; notices
//! the ledger already shows as `notified` or `notification_failed` are not planned again, so a
//! lost store rebuilds without re-sending what was delivered.
//!
//! Delivery: a notice due for an attempt is sent; on success `notified` is appended (id
//! `<notice_id>:notified`) and only then is the notice forgotten, so a crash in between sends
//! it again with the same idempotency key. A failure waits `initial · 2^(attempts−1)` (at most
//! `max`), with jitter, and after `horizon` the notice is given up as `notification_failed`.
//! On each channel a case's notices go out in the order they arose.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use xinfang_shared::calendar::LiveCalendar;
use xinfang_shared::config::Settings;
use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::dues::{open_dues, Policy};
use xinfang_shared::event::{self, until, Actor, Envelope, EventData};
use xinfang_shared::ids::{CaseId, OrganId};
use xinfang_shared::ledger::{Expect, Ledger};
use xinfang_shared::notice::{mask_address, plan, Planned, Recipient};
use xinfang_shared::projection::{Batch, Projection};
use xinfang_shared::state::CaseState;
use xinfang_shared::transfer::registered_of;

use crate::channels::{Channels, Notice};
use crate::metrics::Metrics;
use crate::templates::Templates;

/// A notice waiting for delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub notice: Notice,
    pub channel: String,
    pub attempts: u32,
    /// Unix milliseconds.
    pub first_at: i64,
    pub next_at: i64,
    /// Why it cannot be delivered at all (no address for the channel), if so.
    #[serde(default)]
    pub undeliverable: Option<String>,
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
    pub horizon: Duration,
}

impl Retry {
    /// The delay before attempt `attempts + 1`, with jitter in [½, 1] of the exponential step.
    pub fn delay(&self, attempts: u32) -> Duration {
        let step = self.initial.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(self.max);
        step.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// The service's working parts.
pub struct Outbox {
    pub ledger: Ledger,
    pub store: Projection,
    /// Case id → its query code, sealed by intake with the node secret.
    pub codes: kv::Store,
    pub keys: xinfang_shared::keyring::KeyRing,
    pub channels: Channels,
    pub templates: Templates,
    pub retry: Retry,
    pub metrics: Metrics,
    pub settings: Settings,
    pub policy: Policy,
    pub calendar: LiveCalendar,
    /// When this process started (Unix milliseconds): a notice planned before it may have been
    /// delivered and recorded by the process that died.
    pub started_ms: i64,
    /// Inherited notices already checked against the ledger in this process.
    pub checked: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The cases this process notifies for: share `.0` of `.1` ([`CaseId::share`]).
    pub share: (u32, u32),
}

/// Attempts in flight at once.
const PARALLEL: usize = 64;

/// Notices taken per look at the outbox ([`Outbox::deliver_due`]): each look reads every
/// pending notice, so a burst is taken in rounds this large, [`PARALLEL`] in flight.
pub const ROUND: usize = 1024;

fn key(id: &str) -> Vec<u8> {
    format!("o/{id}").into_bytes()
}

/// Whether `events` already hold the outcome (`notified` or `notification_failed`) of notice
/// `id`, under the outcome's own ids (other services answer the notice's cause too).
fn outcome_recorded(events: &[Envelope], id: &str) -> bool {
    event::answered(events, &[format!("{id}:notified"), format!("{id}:failed")])
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Outbox {
    fn organ_name(&self, id: &OrganId) -> String {
        self.settings.organs.iter().find(|o| o.id == id.as_str()).map(|o| o.name.clone()).unwrap_or(id.to_string())
    }

    /// Where a notice goes on `channel`: the petitioner's phone, an organ's contact, or a
    /// label for channels that carry no address of their own.
    fn address(&self, recipient: &Recipient, channel: &str, events: &[Envelope]) -> Result<String, String> {
        match recipient {
            Recipient::Petitioner => {
                let phone = registered_of(events)
                    .and_then(|r| r.petition.petitioners.iter().find_map(|p| p.phone.as_ref().map(|x| x.to_string())));
                match (channel, phone) {
                    (_, Some(phone)) if channel != "email" => Ok(phone),
                    ("sms", None) => Err("the petitioner gave no phone number".into()),
                    ("email", _) => Err("petitions carry no e-mail address".into()),
                    _ => Ok("petitioner".into()),
                }
            }
            Recipient::Organ(id) => match (self.settings.notification.contacts.get(id.as_str()), channel) {
                (Some(contact), _) => Ok(contact.clone()),
                (None, "webhook" | "file") => Ok(format!("organ:{id}")),
                (None, _) => Err(format!("no contact for organ {id} in notification.contacts")),
            },
        }
    }

    /// The case's query code for its receipt: sealed in its `registered` event, or for a case
    /// registered before that, sealed (or plaintext, older still) in KV `XF_CODES_N`.
    async fn query_code(&self, case: &CaseId, events: &[Envelope]) -> Result<Option<String>, String> {
        if let Some(sealed) = registered_of(events).and_then(|r| r.query_code_sealed) {
            return Ok(self.keys.open(&sealed));
        }
        let kept = self.codes.get(case.as_str()).await.map_err(|e| e.to_string())?;
        Ok(kept.map(|c| String::from_utf8_lossy(&c).to_string()).and_then(|kept| {
            if kept.starts_with("s1.") {
                self.keys.open(&kept)
            } else {
                Some(kept)
            }
        }))
    }

    /// Puts the notices an event calls for in the outbox.
    pub async fn plan(&self, d: Delivery) -> Outcome {
        let case = d.event.case_id.clone();
        if case.share(self.share.1) != self.share.0 {
            // another process's case: only the position moves
            return match self.store.apply(d.seq, Batch::default()).await {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Retry(e.to_string()),
            };
        }
        let all = match self.ledger.events(&case).await {
            Ok(all) => all,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let events = until(&all, &d.event.event_id);
        let Some(state) = CaseState::fold(events) else { return Outcome::Done };
        let dues = open_dues(events, &state, &self.policy, &self.calendar.get());
        let planned = plan(&d.event, events, &state, &|o| self.organ_name(o), &dues);
        let mut batch = Batch::default();
        for p in planned {
            if outcome_recorded(&all, &p.id) || self.store.tree().contains_key(key(&p.id)).unwrap_or(false) {
                continue;
            }
            match self.pending(&case, &d.event, &p, events).await {
                Ok(pending) => batch.insert(key(&p.id), serde_json::to_vec(&pending).expect("serializes")),
                Err(e) => return Outcome::Retry(e),
            }
        }
        // the gauges are recounted by the delivery loop (every tick), not per event: a recount
        // reads the whole outbox, and per event that is quadratic in a replay
        match self.store.apply(d.seq, batch).await {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    async fn pending(
        &self,
        case: &CaseId,
        cause: &Envelope,
        p: &Planned,
        events: &[Envelope],
    ) -> Result<Pending, String> {
        let mut context = p.context.clone();
        if p.template == "receipt" {
            let code = self.query_code(case, events).await?;
            context["query_code"] = code.unwrap_or_else(|| "（请向登记机关索取）".into()).into();
        }
        let channel = self.channels.for_kind(p.recipient.kind()).to_string();
        let (text, mut undeliverable) = match self.templates.render(p.template, &context) {
            Ok(t) => (t, None),
            Err(e) => (String::new(), Some(e)),
        };
        let recipient = match self.address(&p.recipient, &channel, events) {
            Ok(a) => a,
            Err(e) => {
                undeliverable.get_or_insert(e);
                String::new()
            }
        };
        let now = now_ms();
        Ok(Pending {
            notice: Notice {
                notice_id: p.id.clone(),
                case_id: case.to_string(),
                cause_event_id: cause.event_id.clone(),
                template: p.template.to_string(),
                recipient,
                text,
            },
            channel,
            attempts: 0,
            first_at: now,
            next_at: now,
            undeliverable,
        })
    }

    /// Attempts the notices that are due, [`ROUND`] at most, [`PARALLEL`] at a time; returns
    /// how many it attempted (a full round means more may be waiting).
    pub async fn deliver_due(&self) -> Result<usize, String> {
        let now = now_ms();
        let pending: Vec<Pending> = self
            .store
            .tree()
            .scan_prefix(b"o/")
            .flatten()
            .filter_map(|(_, v)| serde_json::from_slice::<Pending>(&v).ok())
            .collect();
        // a channel delivers a case's notices in the order they arose (the receipt before the
        // acceptance notice): a notice waits while an older one of its case is pending there
        let mut first: HashMap<(&str, &str), (i64, &str)> = HashMap::new();
        for p in &pending {
            let order = (p.first_at, p.notice.notice_id.as_str());
            first
                .entry((p.notice.case_id.as_str(), p.channel.as_str()))
                .and_modify(|o| *o = (*o).min(order))
                .or_insert(order);
        }
        let due: Vec<Pending> = pending
            .iter()
            .filter(|p| p.next_at <= now)
            .filter(|p| {
                first.get(&(p.notice.case_id.as_str(), p.channel.as_str()))
                    == Some(&(p.first_at, p.notice.notice_id.as_str()))
            })
            .take(ROUND)
            .cloned()
            .collect();
        let attempted = due.len();
        let results: Vec<_> =
            futures::stream::iter(due.into_iter().map(|p| self.attempt(p))).buffer_unordered(PARALLEL).collect().await;
        self.refresh_gauges();
        for r in results {
            r?;
        }
        Ok(attempted)
    }

    async fn attempt(&self, mut p: Pending) -> Result<(), String> {
        let id = p.notice.notice_id.clone();
        if self.recorded_before_restart(&p).await? {
            tracing::info!(notice = %id, "already recorded in the ledger by the previous process; forgotten");
            self.store.tree().remove(key(&id)).map_err(|e| e.to_string())?;
            return Ok(());
        }
        let masked = mask_address(&p.notice.recipient);
        if let Some(why) = p.undeliverable.clone() {
            tracing::warn!(notice = %id, template = %p.notice.template, %why, "notice cannot be delivered");
            return self.settle(&p, false).await.map(|_| ());
        }
        p.attempts += 1;
        match self.channels.send(&p.channel, &p.notice).await {
            Ok(()) => {
                self.metrics.attempts.with_label_values(&[&p.channel, "ok"]).inc();
                tracing::info!(notice = %id, channel = %p.channel, recipient = %masked, attempts = p.attempts, "notice delivered");
                self.settle(&p, true).await.map(|_| ())
            }
            Err(e) => {
                self.metrics.attempts.with_label_values(&[&p.channel, "error"]).inc();
                let now = now_ms();
                if Duration::from_millis((now - p.first_at).max(0) as u64) >= self.retry.horizon {
                    tracing::warn!(notice = %id, channel = %p.channel, recipient = %masked, attempts = p.attempts, error = %e, "giving up");
                    return self.settle(&p, false).await.map(|_| ());
                }
                p.next_at = now + self.retry.delay(p.attempts).as_millis() as i64;
                tracing::info!(notice = %id, channel = %p.channel, attempts = p.attempts, error = %e, "delivery failed; will retry");
                self.store
                    .tree()
                    .insert(key(&id), serde_json::to_vec(&p).expect("serializes"))
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    }

    /// Whether a notice inherited from an earlier process already has its outcome in the
    /// ledger: that process died after recording it but before sled's removal of the notice
    /// was flushed. The ledger's duplicate window would drop a second record only within an
    /// hour, so the case's events are asked, once per inherited notice.
    async fn recorded_before_restart(&self, p: &Pending) -> Result<bool, String> {
        let id = &p.notice.notice_id;
        if p.first_at >= self.started_ms || self.checked.lock().expect("checked lock").contains(id) {
            return Ok(false);
        }
        let case = CaseId::parse(&p.notice.case_id).map_err(|e| e.to_string())?;
        let events = self.ledger.events(&case).await.map_err(|e| e.to_string())?;
        if outcome_recorded(&events, id) {
            return Ok(true);
        }
        self.checked.lock().expect("checked lock").insert(id.clone());
        Ok(false)
    }

    /// Records the outcome in the ledger, then forgets the notice.
    async fn settle(&self, p: &Pending, delivered: bool) -> Result<(), String> {
        let n = &p.notice;
        let (suffix, data) = {
            let (cause_event_id, channel, recipient, attempts, notice_id, template) = (
                n.cause_event_id.clone(),
                p.channel.clone(),
                mask_address(&n.recipient),
                p.attempts,
                n.notice_id.clone(),
                n.template.clone(),
            );
            if delivered {
                ("notified", EventData::Notified { cause_event_id, channel, recipient, attempts, notice_id, template })
            } else {
                (
                    "failed",
                    EventData::NotificationFailed { cause_event_id, channel, recipient, attempts, notice_id, template },
                )
            }
        };
        let case = CaseId::parse(&n.case_id).map_err(|e| e.to_string())?;
        let event = Envelope::new(
            format!("{}:{suffix}", n.notice_id),
            case,
            self.ledger.node().clone(),
            xinfang_shared::time::now_cst(),
            Actor::system("notification"),
            Some(n.cause_event_id.clone()),
            data,
        );
        self.ledger.append(&event, Expect::Any).await.map_err(|e| e.to_string())?;
        self.store.tree().remove(key(&n.notice_id)).map_err(|e| e.to_string())?;
        let result = if delivered { "delivered" } else { "failed" };
        self.metrics.notices.with_label_values(&[&n.template, &p.channel, result]).inc();
        Ok(())
    }

    /// Outbox depth and the age of its oldest notice.
    pub fn refresh_gauges(&self) {
        let mut depth = 0;
        let mut oldest = i64::MAX;
        for (_, v) in self.store.tree().scan_prefix(b"o/").flatten() {
            if let Ok(p) = serde_json::from_slice::<Pending>(&v) {
                depth += 1;
                oldest = oldest.min(p.first_at);
            }
        }
        self.metrics.depth.set(depth);
        self.metrics.oldest.set(if depth == 0 { 0 } else { (now_ms() - oldest).max(0) / 1000 });
    }
}

/// `1s`, `30s`, `10m`, `24h` as a duration.
pub fn duration(s: Option<&str>, default: Duration, field: &str) -> Result<Duration, String> {
    let Some(s) = s else { return Ok(default) };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{field}: {s:?} is not like 30s, 10m or 24h"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{field}: {s:?} is not like 30s, 10m or 24h")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xinfang_shared::fixtures;

    /// Issue 14: routing's `routed` for the same `registered` is no outcome of the receipt.
    #[test]
    fn another_services_answer_to_the_same_event_does_not_count() {
        let registered = fixtures::registered("01REG", fixtures::at(2, 9));
        let routed = fixtures::routed(&registered, fixtures::at(2, 10));
        let receipt = registered.caused_id("receipt:petitioner");
        assert!(!outcome_recorded(&[registered.clone(), routed.clone()], &receipt));
        let assignment = fixtures::notified(&registered, "assignment");
        assert!(!outcome_recorded(&[registered.clone(), routed.clone(), assignment.clone()], &receipt));
        let notified = fixtures::notified(&registered, "receipt");
        assert!(outcome_recorded(&[registered, routed, assignment, notified], &receipt));
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let r =
            Retry { initial: Duration::from_secs(1), max: Duration::from_secs(60), horizon: Duration::from_secs(3600) };
        for _ in 0..50 {
            let d1 = r.delay(1);
            assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1), "{d1:?}");
            let d4 = r.delay(4);
            assert!(d4 >= Duration::from_secs(4) && d4 <= Duration::from_secs(8), "{d4:?}");
            assert!(r.delay(30) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Some("1s"), Duration::ZERO, "f").unwrap(), Duration::from_secs(1));
        assert_eq!(duration(Some("10m"), Duration::ZERO, "f").unwrap(), Duration::from_secs(600));
        assert_eq!(duration(Some("24h"), Duration::ZERO, "f").unwrap(), Duration::from_secs(86_400));
        assert_eq!(duration(None, Duration::from_secs(5), "f").unwrap(), Duration::from_secs(5));
        assert!(duration(Some("soon"), Duration::ZERO, "notification.retry_initial")
            .unwrap_err()
            .contains("retry_initial"));
    }
}
