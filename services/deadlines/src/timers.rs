//! The timers in sled, one tree (a [`Projection`], so its position in the ledger is stored
//! with it):
//! - `a/<case>/<step>` → [`Armed`]: the open step, its due and warning instants;
//! - `t/<due ms, 16 hex>/<case>/<step>/<kind>` → [`Fire`]: what fires when, in due order.
//! - `c/<count>/<organ>/<outcome>` → u64: the indicator counts
//!   ([`xinfang_shared::indicators`]), written in the batch of the event that adds to them.
//!
//! Arming recomputes a case's open steps from its history on every event that can change them
//! ([`xinfang_shared::dues::open_steps`]) and reconciles. Firing appends the events due in
//! rounds of [`FIRE_ROUND`] (one run of ledger appends each), each with an id derived from
//! (case, step, due, kind), then forgets them; while it does, [`FIRING_MARK`] says so. A new
//! holiday calendar moves every provisional due and records the move as `due_recomputed`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xinfang_shared::calendar::Calendar;
use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::dues::{open_steps, warn_at, Policy};
use xinfang_shared::event::{self, Actor, Envelope, EventData, Step};
use xinfang_shared::ids::CaseId;
use xinfang_shared::indicators::{self, Count, Observation, NO_ORGAN};
use xinfang_shared::ledger::{duplicate_window, Expect, Ledger, Outgoing};
use xinfang_shared::projection::{Batch, Projection, Tree};
use xinfang_shared::state::CaseState;
use xinfang_shared::time::{to_cst, Instant};

use crate::metrics::Metrics;
use crate::render::Renderer;

/// An open step with a timer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Armed {
    pub due_at: Instant,
    pub warn_at: Instant,
    pub provisional: bool,
    /// The organ that had the case when the step was armed (metrics only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organ: Option<String>,
}

/// What fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Warned,
    Breached,
}

impl Kind {
    /// Its name in a firing's id and in metrics: `warned`, `breached`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Warned => "warned",
            Kind::Breached => "breached",
        }
    }

    /// The type of the event it appends.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::Warned => "deadline_warned",
            Kind::Breached => "deadline_breached",
        }
    }
}

/// A scheduled firing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fire {
    pub case_id: CaseId,
    pub step: Step,
    pub kind: Kind,
    pub due_at: Instant,
    pub provisional: bool,
    /// As in [`Armed::organ`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organ: Option<String>,
}

fn parse_step(name: &str) -> Option<Step> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// Timers fired per round: read from the store together, appended as one run.
pub const FIRE_ROUND: usize = 20_000;

/// Fired timers held before they are forgotten, at most (bounds memory after long downtime).
const FORGET_EVERY: usize = 200_000;

/// Fired timers removed from the store per write, and the pause after each (a burst of
/// 100,000 is forgotten in about 4 s, once all of it is in the ledger).
const FORGET_CHUNK: usize = 1024;
const FORGET_PAUSE: Duration = Duration::from_millis(40);

/// Present in the store while fired timers may not yet be forgotten durably: from before the
/// first append of a firing until its removals are flushed. A process that finds it more than
/// [`recheck_after`] after the firing began cannot count on the ledger's duplicate window to
/// drop a second append, so it looks each of those timers up in its case's events first.
pub const FIRING_MARK: &[u8] = b"m/firing";

/// How old a [`FIRING_MARK`] may be before its timers are looked up instead of re-appended:
/// five sixths of the ledger's duplicate window (50 minutes of the usual hour).
pub fn recheck_after() -> Duration {
    duplicate_window() * 5 / 6
}

/// The value of [`FIRING_MARK`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FiringMark {
    /// When the earliest unfinished firing began, Unix milliseconds (wall clock).
    pub began_ms: i64,
    /// The end (exclusive) of the timer keys it covers.
    pub limit: String,
}

/// The indicator counts: `c/<count>/<organ>/<outcome>` → a big-endian u64.
const COUNTS: &[u8] = b"c/";

fn count_key(o: &Observation) -> Vec<u8> {
    format!("c/{}/{}/{}", o.count.name(), o.organ, o.outcome).into_bytes()
}

fn decode_count(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v).map(u64::from_be_bytes).unwrap_or(0)
}

fn labels(o: &Observation) -> Vec<&str> {
    if o.count.by_organ() {
        vec![o.organ.as_str(), o.outcome]
    } else {
        vec![o.outcome]
    }
}

fn armed_key(case: &str, step: &str) -> Vec<u8> {
    format!("a/{case}/{step}").into_bytes()
}

fn fire_key(at: Instant, case: &str, step: &str, kind: Kind) -> Vec<u8> {
    let ms = at.timestamp_millis().max(0) as u64;
    let kind = match kind {
        Kind::Warned => "w",
        Kind::Breached => "b",
    };
    format!("t/{ms:016x}/{case}/{step}/{kind}").into_bytes()
}

/// The id of a firing: the same whoever fires it, however often.
pub fn firing_id(case: &str, step: &str, due: Instant, kind: &str) -> String {
    format!("{case}:{step}:{}:{kind}", due.timestamp())
}

/// Writes the timer of one open step into `batch`: the step and its breach, and its warning
/// when that comes before the due.
pub fn arm_into(batch: &mut Batch, case: &CaseId, step: Step, armed: &Armed) {
    let name = step.name();
    batch.insert(armed_key(case.as_str(), name), serde_json::to_vec(armed).expect("serializes"));
    let fire = |kind| Fire {
        case_id: case.clone(),
        step,
        kind,
        due_at: armed.due_at,
        provisional: armed.provisional,
        organ: armed.organ.clone(),
    };
    if armed.warn_at < armed.due_at {
        batch.insert(
            fire_key(armed.warn_at, case.as_str(), name, Kind::Warned),
            serde_json::to_vec(&fire(Kind::Warned)).expect("serializes"),
        );
    }
    batch.insert(
        fire_key(armed.due_at, case.as_str(), name, Kind::Breached),
        serde_json::to_vec(&fire(Kind::Breached)).expect("serializes"),
    );
}

/// How many events a firing makes: one, and the case's closing when a petitioner lets the
/// review or re-review window pass.
fn firing_len(fire: &Fire, on_time: bool) -> usize {
    if fire.kind == Kind::Breached && on_time && matches!(fire.step, Step::ReviewWindow | Step::RereviewWindow) {
        2
    } else {
        1
    }
}

/// Whether the case's events already hold the warning or breach of `step` due at `due`.
fn fired(all: &[Envelope], case: &CaseId, step: Step, due: Instant, kind: Kind) -> bool {
    event::answered(all, &[firing_id(case.as_str(), step.name(), due, kind.name())])
}

/// The events of a firing that the case's events `have` do not hold under their own ids.
fn missing(firing: Vec<Envelope>, have: &[Envelope]) -> Vec<Envelope> {
    firing.into_iter().filter(|e| !event::answered(have, &[&e.event_id])).collect()
}

/// Removes fired timers from the store, [`FORGET_CHUNK`] keys per write with a pause between:
/// sled holds a fast run of removals in memory until its flusher catches up — about 100 MB
/// more for a burst of 100,000 removed without pauses.
async fn forget_all(tree: &Tree, keys: Vec<Vec<u8>>) -> Result<(), String> {
    for chunk in keys.chunks(FORGET_CHUNK) {
        let mut batch = Batch::default();
        for key in chunk {
            batch.remove(key.as_slice());
        }
        tree.apply_batch(batch).map_err(|e| e.to_string())?;
        tokio::time::sleep(FORGET_PAUSE).await;
    }
    Ok(())
}

/// What a reconcile is the effect of.
#[derive(Debug, Clone, Copy)]
enum Cause {
    /// A delivered ledger event, at this stream sequence.
    Event(u64),
    /// A new holiday calendar.
    Calendar,
    /// The replay of a store being rebuilt.
    Rebuild,
}

/// The deadlines service's working parts.
pub struct Timers {
    pub ledger: Ledger,
    pub projection: Projection,
    calendar: RwLock<Arc<Calendar>>,
    pub policy: Policy,
    pub metrics: Metrics,
}

impl Timers {
    /// The timers of `projection`, armed by `calendar` and `policy`.
    pub fn new(ledger: Ledger, projection: Projection, calendar: Calendar, policy: Policy, metrics: Metrics) -> Self {
        Self { ledger, projection, calendar: RwLock::new(Arc::new(calendar)), policy, metrics }
    }

    /// The holiday calendar in force.
    pub fn calendar(&self) -> Arc<Calendar> {
        self.calendar.read().map(|c| c.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Puts a new holiday calendar in force and recomputes every provisional timer with it;
    /// each due that moves is recorded as `due_recomputed`. Returns how many cases were looked
    /// at. Safe to repeat: unchanged dues record nothing.
    pub async fn set_calendar(&self, calendar: Calendar, now: Instant) -> Result<usize, String> {
        match self.calendar.write() {
            Ok(mut c) => *c = Arc::new(calendar),
            Err(e) => *e.into_inner() = Arc::new(calendar),
        }
        let mut cases: Vec<CaseId> = Vec::new();
        for item in self.projection.tree().scan_prefix(b"a/").flatten() {
            if serde_json::from_slice::<Armed>(&item.1).is_ok_and(|a| a.provisional) {
                let key = String::from_utf8_lossy(&item.0).to_string();
                if let Some(case) = key.split('/').nth(1).and_then(|c| CaseId::parse(c).ok()) {
                    if cases.last() != Some(&case) {
                        cases.push(case);
                    }
                }
            }
        }
        for case in &cases {
            let events = self.ledger.events(case).await.map_err(|e| e.to_string())?;
            self.reconcile(case, &events, &events, now, Cause::Calendar).await?;
        }
        Ok(cases.len())
    }

    /// Sets the armed-timer gauges from the store (at start).
    pub fn count_armed(&self) {
        for item in self.projection.tree().scan_prefix(b"a/").flatten() {
            let key = String::from_utf8_lossy(&item.0).to_string();
            let step = key.rsplit('/').next().unwrap_or_default().to_string();
            self.metrics.armed.with_label_values(&[&step]).inc();
            if serde_json::from_slice::<Armed>(&item.1).is_ok_and(|a| a.provisional) {
                self.metrics.provisional.with_label_values(&[&step]).inc();
            }
        }
    }

    /// Reconciles a case's timers with its open steps after a ledger event.
    pub async fn arm(&self, d: Delivery) -> Outcome {
        let case = d.event.case_id.clone();
        let history = match self.ledger.history(&case).await {
            Ok(h) => h,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let all: Vec<Envelope> = history.iter().map(|s| s.event.clone()).collect();
        let upto = history.iter().take_while(|s| s.seq <= d.seq).count();
        match self.reconcile(&case, &all[..upto], &all, d.event.at, Cause::Event(d.seq)).await {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Retry(e),
        }
    }

    /// Replays a case's whole history (`all`, oldest first) into a store being rebuilt: each
    /// event of `triggers` is reconciled as its delivery would have been, against the case's
    /// events up to it, with no ledger read ([`crate::rebuild`]).
    pub async fn replay(&self, case: &CaseId, all: &[Envelope], triggers: &[&str]) -> Result<(), String> {
        for (i, event) in all.iter().enumerate() {
            if triggers.contains(&event.kind.as_str()) {
                self.reconcile(case, &all[..=i], all, event.at, Cause::Rebuild).await?;
            }
        }
        Ok(())
    }

    /// Makes the case's timers those of its open steps as of `events` at time `at`. For a
    /// delivered event, the store records its stream sequence as applied (a replay is
    /// skipped); for a new calendar, dues that move are recorded in the ledger as
    /// `due_recomputed`; a rebuild only writes the store.
    /// A warning or breach already in the case's ledger (`all`, later events included) is not
    /// armed again: a store rebuilt from the ledger must not fire twice what fired before it
    /// was lost, whatever the duplicate window.
    async fn reconcile(
        &self,
        case: &CaseId,
        events: &[Envelope],
        all: &[Envelope],
        at: Instant,
        cause: Cause,
    ) -> Result<(), String> {
        let Some(state) = CaseState::fold(events) else { return Ok(()) };
        let calendar = self.calendar();
        let want = open_steps(events, &state, &self.policy, &calendar);
        let tree = self.projection.tree();
        let mut batch = Batch::default();
        let mut moved = Vec::new();
        // steps that closed or moved: forget them; one that completed after its due and whose
        // breach has not fired yet still gets its breach
        for item in tree.scan_prefix(format!("a/{case}/").as_bytes()).flatten() {
            let key = String::from_utf8_lossy(&item.0).to_string();
            let step = key.rsplit('/').next().unwrap_or_default().to_string();
            let Ok(armed) = serde_json::from_slice::<Armed>(&item.1) else { continue };
            let same = want.get(step.as_str()).is_some_and(|(_, due)| due.at == armed.due_at);
            if same {
                continue;
            }
            if let (Some((_, due)), Cause::Calendar, true) = (want.get(step.as_str()), cause, armed.provisional) {
                moved.push((step.clone(), armed.due_at, *due));
            }
            if !want.contains_key(step.as_str()) && armed.due_at < at {
                let breach_pending =
                    tree.contains_key(fire_key(armed.due_at, case.as_str(), &step, Kind::Breached)).unwrap_or(false);
                if let (true, Some(s)) = (breach_pending, parse_step(&step)) {
                    let fire = Fire {
                        case_id: case.clone(),
                        step: s,
                        kind: Kind::Breached,
                        due_at: armed.due_at,
                        provisional: armed.provisional,
                        organ: armed.organ.clone(),
                    };
                    self.append_fire(&fire, at, false).await?;
                }
            }
            batch.remove(item.0.clone());
            batch.remove(fire_key(armed.warn_at, case.as_str(), &step, Kind::Warned));
            batch.remove(fire_key(armed.due_at, case.as_str(), &step, Kind::Breached));
            self.metrics.armed.with_label_values(&[&step]).dec();
            if armed.provisional {
                self.metrics.provisional.with_label_values(&[&step]).dec();
            }
        }
        for (step, (start, due)) in &want {
            let key = armed_key(case.as_str(), step);
            let current = tree.get(&key).ok().flatten().and_then(|v| serde_json::from_slice::<Armed>(&v).ok());
            if current.is_some_and(|a| a.due_at == due.at) {
                continue;
            }
            let Some(s) = parse_step(step) else { continue };
            let armed = Armed {
                due_at: due.at,
                warn_at: warn_at(*start, due.at),
                provisional: due.provisional,
                organ: state.organ.as_ref().map(|o| o.to_string()),
            };
            arm_into(&mut batch, case, s, &armed);
            for kind in [Kind::Warned, Kind::Breached] {
                if fired(all, case, s, armed.due_at, kind) {
                    let at = if kind == Kind::Warned { armed.warn_at } else { armed.due_at };
                    batch.remove(fire_key(at, case.as_str(), step, kind));
                }
            }
            self.metrics.armed.with_label_values(&[step]).inc();
            if armed.provisional {
                self.metrics.provisional.with_label_values(&[step]).inc();
            }
        }
        for (step, from, to) in moved {
            let Some(s) = parse_step(&step) else { continue };
            let id = format!("{case}:{step}:{}:recomputed:{}", from.timestamp(), to.at.timestamp());
            let data =
                EventData::DueRecomputed { step: s, previous_due_at: from, due_at: to.at, provisional: to.provisional };
            let fire = Fire {
                case_id: case.clone(),
                step: s,
                kind: Kind::Breached,
                due_at: to.at,
                provisional: to.provisional,
                organ: state.organ.as_ref().map(|o| o.to_string()),
            };
            self.append(&fire, &id, data, at).await?;
            self.metrics.recomputed.with_label_values(&[&step]).inc();
        }
        // the indicators: what the event adds, written with its position
        let observed = match (cause, events.split_last()) {
            (Cause::Event(_) | Cause::Rebuild, Some((event, before))) => {
                indicators::observe(before, event, &self.policy, &calendar)
            }
            _ => None,
        };
        if let Some(o) = &observed {
            let key = count_key(o);
            let n = tree.get(&key).map_err(|e| e.to_string())?.map_or(0, |v| decode_count(&v));
            batch.insert(key, &(n + 1).to_be_bytes());
        }
        let applied = match cause {
            Cause::Event(seq) => self.projection.apply(seq, batch).await.map_err(|e| e.to_string())?,
            Cause::Calendar | Cause::Rebuild => tree.apply_batch(batch).map(|_| true).map_err(|e| e.to_string())?,
        };
        // a rebuild's counts are exported once it is done ([`Self::export_counts`])
        if let (true, Cause::Event(_), Some(o)) = (applied, cause, &observed) {
            self.metrics.count(o.count).with_label_values(&labels(o)).inc();
        }
        Ok(())
    }

    /// Sets the indicator counters from the counts in the store (at start, after any rebuild).
    pub fn export_counts(&self) {
        for item in self.projection.tree().scan_prefix(COUNTS).flatten() {
            let key = String::from_utf8_lossy(&item.0).to_string();
            let mut parts = key.splitn(4, '/').skip(1);
            let (Some(name), Some(organ), Some(outcome)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Some(count) = Count::ALL.into_iter().find(|c| c.name() == name) else { continue };
            let counter = self.metrics.count(count);
            let counter = if count.by_organ() {
                counter.with_label_values(&[organ, outcome])
            } else {
                counter.with_label_values(&[outcome])
            };
            counter.inc_by(decode_count(&item.1).saturating_sub(counter.get()));
        }
    }

    /// Forgets every indicator count (a rebuild starts from none).
    pub fn clear_counts(&self) -> Result<(), String> {
        let mut batch = Batch::default();
        for item in self.projection.tree().scan_prefix(COUNTS).flatten() {
            batch.remove(item.0);
        }
        self.projection.tree().apply_batch(batch).map_err(|e| e.to_string())
    }

    /// Open steps past their due at `now`, by step and organ, from the store.
    pub fn overdue(&self, now: Instant) -> BTreeMap<(String, String), i64> {
        let mut by = BTreeMap::new();
        for item in self.projection.tree().scan_prefix(b"a/").flatten() {
            let Ok(armed) = serde_json::from_slice::<Armed>(&item.1) else { continue };
            if armed.due_at < now {
                let key = String::from_utf8_lossy(&item.0).to_string();
                let step = key.rsplit('/').next().unwrap_or_default().to_string();
                *by.entry((step, armed.organ.unwrap_or_else(|| NO_ORGAN.to_string()))).or_insert(0) += 1;
            }
        }
        by
    }

    /// Fires every timer due at or before `now`, oldest first, in rounds of [`FIRE_ROUND`]:
    /// each round's events go to the ledger as one run of appends
    /// ([`Ledger::append_rendered_with`]), and a timer is forgotten only once its events are in the
    /// ledger — after the whole burst is out, so the store's writes do not slow the firing.
    pub async fn fire_due(&self, now: Instant) -> Result<usize, String> {
        let limit = format!("t/{:016x}0", now.timestamp_millis().max(0) as u64).into_bytes();
        let tree = self.projection.tree();
        let mut fired = self.refire_checked(now, &limit).await?;
        let mut marked = false;
        let mut from = b"t/".to_vec();
        // keys are copied out of sled: its keys share their node's buffer, and holding a burst's
        // worth would keep every node they came from in memory
        let mut forget: Vec<Vec<u8>> = Vec::new();
        let outcome = loop {
            let mut due = Vec::with_capacity(FIRE_ROUND);
            for item in tree.range(from.clone()..limit.clone()).take(FIRE_ROUND) {
                let (key, value) = item.map_err(|e| e.to_string())?;
                match serde_json::from_slice::<Fire>(&value) {
                    Ok(fire) => due.push((key.to_vec(), fire)),
                    Err(_) => forget.push(key.to_vec()),
                }
            }
            let Some((last, _)) = due.last() else { break Ok(()) };
            from = last.clone();
            from.push(0);
            let full = due.len() == FIRE_ROUND;
            if !marked {
                self.mark_firing(&limit).await?;
                marked = true;
            }
            // rendered as they are sent, so nats-server is busy while the next is made
            let mut renderer = Renderer::new(self.ledger.node(), to_cst(now));
            let events: Box<dyn Iterator<Item = Outgoing> + Send + '_> =
                Box::new(due.iter().flat_map(move |(_, f)| self.rendered(&mut renderer, f, now)));
            // each firing is counted (and its lag observed) as the ledger confirms its events
            let (mut confirmed, mut events_confirmed) = (0, 0);
            let result = self
                .ledger
                .append_rendered_with(events, |stored| {
                    self.confirm(&due, &mut confirmed, &mut events_confirmed, stored)
                })
                .await;
            let stored = match &result {
                Ok(n) => *n,
                Err(partial) => partial.stored,
            };
            self.confirm(&due, &mut confirmed, &mut events_confirmed, stored);
            forget.extend(due[..confirmed].iter().map(|(key, _)| key.clone()));
            fired += confirmed;
            if let Err(partial) = result {
                break Err(partial.to_string());
            }
            if !full {
                break Ok(());
            }
            if forget.len() >= FORGET_EVERY {
                forget_all(tree, std::mem::take(&mut forget)).await?;
            }
        };
        forget_all(tree, forget).await?;
        if marked && outcome.is_ok() {
            self.unmark_firing().await?;
        }
        outcome.map(|()| fired)
    }

    /// Writes (or widens) [`FIRING_MARK`] durably, before a firing's first append.
    async fn mark_firing(&self, limit: &[u8]) -> Result<(), String> {
        let tree = self.projection.tree();
        let mut mark = FiringMark {
            began_ms: chrono::Utc::now().timestamp_millis(),
            limit: String::from_utf8_lossy(limit).into_owned(),
        };
        if let Some(old) = tree.get(FIRING_MARK).map_err(|e| e.to_string())? {
            if let Ok(old) = serde_json::from_slice::<FiringMark>(&old) {
                mark.began_ms = mark.began_ms.min(old.began_ms);
                mark.limit = mark.limit.max(old.limit);
            }
        }
        tree.insert(FIRING_MARK, serde_json::to_vec(&mark).expect("serializes")).map_err(|e| e.to_string())?;
        self.projection.flush().await.map_err(|e| e.to_string())
    }

    /// Removes [`FIRING_MARK`] once the forgetting before it is durable.
    async fn unmark_firing(&self) -> Result<(), String> {
        self.projection.flush().await.map_err(|e| e.to_string())?;
        self.projection.tree().remove(FIRING_MARK).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// After a crash in the middle of a firing and a restart past [`recheck_after`]: fires the
    /// timers the old [`FIRING_MARK`] covers one by one, appending only the events their cases
    /// do not already have. Slow (a ledger read per timer), and needed only then.
    async fn refire_checked(&self, now: Instant, limit: &[u8]) -> Result<usize, String> {
        let tree = self.projection.tree();
        let Some(mark) = tree.get(FIRING_MARK).map_err(|e| e.to_string())? else { return Ok(0) };
        let mark: Option<FiringMark> = serde_json::from_slice(&mark).ok();
        let age = mark.as_ref().map_or(i64::MAX, |m| chrono::Utc::now().timestamp_millis() - m.began_ms);
        if age < recheck_after().as_millis() as i64 {
            return Ok(0);
        }
        let end = mark.map_or(limit.to_vec(), |m| m.limit.into_bytes()).min(limit.to_vec());
        let covered: Vec<(Vec<u8>, Option<Fire>)> = tree
            .range(b"t/".to_vec()..end)
            .map(|item| item.map(|(k, v)| (k.to_vec(), serde_json::from_slice::<Fire>(&v).ok())))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        tracing::warn!(
            timers = covered.len(),
            age_s = age / 1000,
            "an unfinished firing past the duplicate window; checking each timer against the ledger"
        );
        let mut fired = 0;
        for (key, fire) in covered {
            if let Some(fire) = fire {
                let have = self.ledger.events(&fire.case_id).await.map_err(|e| e.to_string())?;
                for event in missing(self.firing(&fire, now, true), &have) {
                    self.ledger.append(&event, Expect::Any).await.map_err(|e| e.to_string())?;
                }
                self.record(&fire, true);
                fired += 1;
            }
            tree.remove(key).map_err(|e| e.to_string())?;
        }
        self.unmark_firing().await?;
        Ok(fired)
    }

    /// Reads the timers due up to `at` (at most `max` of them) without firing them, so that
    /// their pages are in sled's cache when they come due: a burst then reads from memory
    /// instead of paging its nodes in from the log while it appends. Returns how many.
    pub fn warm(&self, at: Instant, max: usize) -> usize {
        let limit = format!("t/{:016x}0", at.timestamp_millis().max(0) as u64).into_bytes();
        self.projection.tree().range(b"t/".to_vec()..limit).take(max).filter(|item| item.is_ok()).count()
    }

    /// The instant of the earliest armed timer, if any.
    pub fn next_due(&self) -> Option<Instant> {
        let (key, _) = self.projection.tree().range(b"t/".to_vec()..b"t0".to_vec()).next()?.ok()?;
        let ms = std::str::from_utf8(key.get(2..18)?).ok().and_then(|h| u64::from_str_radix(h, 16).ok())?;
        chrono::DateTime::from_timestamp_millis(ms as i64).map(|t| t.with_timezone(&xinfang_shared::time::cst()))
    }

    /// A firing's events: the warning or breach, and for a petitioner's window that runs out
    /// on time, the case's closing.
    fn firing(&self, fire: &Fire, now: Instant, on_time: bool) -> Vec<Envelope> {
        let (step, due_at, provisional) = (fire.step, fire.due_at, fire.provisional);
        let data = match fire.kind {
            Kind::Warned => EventData::DeadlineWarned { step, due_at, provisional },
            Kind::Breached => EventData::DeadlineBreached { step, due_at, provisional },
        };
        let id = firing_id(fire.case_id.as_str(), step.name(), due_at, fire.kind.name());
        let mut events = vec![self.event(fire, &id, data, now)];
        if firing_len(fire, on_time) == 2 {
            let reason =
                if fire.step == Step::ReviewWindow { "review_window_expired" } else { "rereview_window_expired" };
            events.push(self.event(fire, &format!("{id}:closed"), EventData::Closed { reason: reason.into() }, now));
        }
        events
    }

    /// [`Self::firing`] on time, rendered for the wire (the warning or breach without building
    /// an [`Envelope`]).
    fn rendered(&self, renderer: &mut Renderer, fire: &Fire, now: Instant) -> Vec<Outgoing> {
        let id = firing_id(fire.case_id.as_str(), fire.step.name(), fire.due_at, fire.kind.name());
        let bytes = renderer.deadline(&id, &fire.case_id, fire.kind, fire.step, fire.due_at, fire.provisional);
        let mut out = vec![self.ledger.outgoing_raw(&fire.case_id, fire.kind.event_type(), &id, bytes.into())];
        if firing_len(fire, true) == 2 {
            // the case's closing after a petitioner's window: rare, built the ordinary way
            out.extend(self.firing(fire, now, true).get(1).map(|closed| self.ledger.outgoing(closed)));
        }
        out
    }

    /// Counts the firings of `due`, from `*next` on, whose events are all among the first
    /// `stored` events of their run (`*events` of them belong to the firings counted so far).
    fn confirm(&self, due: &[(Vec<u8>, Fire)], next: &mut usize, events: &mut usize, stored: usize) {
        while let Some((_, fire)) = due.get(*next) {
            let len = firing_len(fire, true);
            if *events + len > stored {
                break;
            }
            *events += len;
            *next += 1;
            self.record(fire, true);
        }
    }

    /// Counts a firing whose events are in the ledger.
    fn record(&self, fire: &Fire, on_time: bool) {
        let step = fire.step.name();
        if firing_len(fire, on_time) == 2 {
            self.metrics.fired.with_label_values(&[step, "closed"]).inc();
        }
        let kind = fire.kind.name();
        self.metrics.fired.with_label_values(&[step, kind]).inc();
        if fire.kind == Kind::Breached {
            self.metrics.breaches.with_label_values(&[step, fire.organ.as_deref().unwrap_or(NO_ORGAN)]).inc();
        }
        if on_time && fire.kind == Kind::Breached {
            // measured when the ledger confirms the event (with a batch, within 500 events)
            let lag = (chrono::Utc::now() - fire.due_at.to_utc()).num_milliseconds().max(0) as f64 / 1000.0;
            self.metrics.lag.with_label_values(&[kind]).observe(lag);
        }
    }

    /// Appends a firing's events one by one (a late breach found while arming).
    async fn append_fire(&self, fire: &Fire, now: Instant, on_time: bool) -> Result<(), String> {
        for event in self.firing(fire, now, on_time) {
            self.ledger.append(&event, Expect::Any).await.map_err(|e| e.to_string())?;
        }
        self.record(fire, on_time);
        Ok(())
    }

    fn event(&self, fire: &Fire, id: &str, data: EventData, now: Instant) -> Envelope {
        Envelope::new(
            id.to_string(),
            fire.case_id.clone(),
            self.ledger.node().clone(),
            to_cst(now),
            Actor::system("deadlines"),
            None,
            data,
        )
    }

    async fn append(&self, fire: &Fire, id: &str, data: EventData, now: Instant) -> Result<(), String> {
        let event = self.event(fire, id, data, now);
        self.ledger.append(&event, Expect::Any).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xinfang_shared::fixtures;

    /// Issue 14: escalation's answer to a breach (caused by it) is not the case's closing that
    /// the same firing owes; only the firing's own ids count.
    #[test]
    fn another_services_answer_to_the_same_event_does_not_count() {
        let registered = fixtures::registered("01REG", fixtures::at(2, 9));
        let due = fixtures::at(20, 23);
        let id = firing_id(registered.case_id.as_str(), "review_window", due, "breached");
        let data = |step| EventData::DeadlineBreached { step, due_at: due, provisional: false };
        let breach = fixtures::event(&id, due, "deadlines", None, data(Step::ReviewWindow));
        let closed = fixtures::event(
            &format!("{id}:closed"),
            due,
            "deadlines",
            None,
            EventData::Closed { reason: "review_window_expired".into() },
        );
        let mut foreign = fixtures::notified(&breach, "supervision_notice");
        foreign.event_id = breach.caused_id("supervision");
        let have = vec![registered, breach.clone(), foreign];
        let left = missing(vec![breach, closed], &have);
        assert_eq!(left.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), [format!("{id}:closed")]);
    }
}
