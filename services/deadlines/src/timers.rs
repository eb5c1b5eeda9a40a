//! The timers: one record per open step in sled, and an index of what fires next in memory.
//!
//! The store is one tree (a [`Projection`], so its position in the ledger is stored with it):
//! - `a/<case>/<step code>` → [`Armed`] in 17 bytes and the organ: the open step, its due and
//!   warning instants, and which of its warning and breach are already in the ledger;
//! - `c/<count>/<organ>/<outcome>` → the indicator count and the ledger sequence it last
//!   counted ([`xinfang_shared::indicators`]);
//! - `m/firing` ([`FIRING_MARK`]) while a firing is under way, `m/format` the layout's version.
//!
//! One record per timer and no sled batch keep the store small (≈ 280 B per timer at
//! 1,000,000, docs/benchmarks.md): an event's writes go one by one with its ledger position
//! last ([`Projection::apply`]), and each replaces a whole record, so an event applied
//! again after a crash converges.
//!
//! The due index ([`Due`], one entry per armed step: its warning, or its breach once the
//! warning is out) is built from the records at start and kept with them; an entry whose record
//! has changed is dropped when it comes due.
//!
//! Arming recomputes a case's open steps from its history on every event that can change them
//! ([`xinfang_shared::dues::open_steps`]) and reconciles. Firing appends the events due in
//! rounds of [`FIRE_ROUND`] (one run of ledger appends each), each with an id derived from
//! (case, step, due, kind), then marks them fired in their records; while it does,
//! [`FIRING_MARK`] says so. A new holiday calendar moves every provisional due and records the
//! move as `due_recomputed`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xinfang_shared::calendar::Calendar;
use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::dues::Policy;
use xinfang_shared::event::{self, Actor, Envelope, EventData, Step};
use xinfang_shared::ids::CaseId;
use xinfang_shared::indicators::{Count, Observation, NO_ORGAN};
use xinfang_shared::ledger::{duplicate_window, Expect, Ledger, Outgoing};
use xinfang_shared::projection::{decode_count, encode_count, write_in_order, Projection, StoreError, Write};
use xinfang_shared::time::{to_cst, Instant};

use crate::metrics::Metrics;
use crate::plan::{self, Cause, Rules};
use crate::render::Renderer;

/// An open step with a timer.
#[derive(Debug, Clone, PartialEq)]
pub struct Armed {
    pub due_at: Instant,
    pub warn_at: Instant,
    pub provisional: bool,
    /// The organ that had the case when the step was armed (metrics only).
    pub organ: Option<String>,
    /// Whether its warning, and its breach, are in the ledger.
    pub warned: bool,
    pub breached: bool,
}

const PROVISIONAL: u8 = 1;
const WARNED: u8 = 2;
const BREACHED: u8 = 4;

fn nanos(t: Instant) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn from_nanos(ns: i64) -> Instant {
    to_cst(chrono::DateTime::from_timestamp_nanos(ns).fixed_offset())
}

impl Armed {
    /// A step armed now: nothing of it in the ledger yet.
    pub fn new(due_at: Instant, warn_at: Instant, provisional: bool, organ: Option<String>) -> Self {
        Self { due_at, warn_at, provisional, organ, warned: false, breached: false }
    }

    /// Its record: due and warning instants (Unix nanoseconds, big-endian), a flags byte, the
    /// organ's id.
    pub fn encode(&self) -> Vec<u8> {
        let organ = self.organ.as_deref().unwrap_or_default();
        let mut v = Vec::with_capacity(17 + organ.len());
        v.extend_from_slice(&nanos(self.due_at).to_be_bytes());
        v.extend_from_slice(&nanos(self.warn_at).to_be_bytes());
        let flags = [(self.provisional, PROVISIONAL), (self.warned, WARNED), (self.breached, BREACHED)];
        v.push(flags.iter().filter(|(on, _)| *on).map(|(_, bit)| bit).sum());
        v.extend_from_slice(organ.as_bytes());
        v
    }

    /// Reads a record written by [`Armed::encode`].
    pub fn decode(v: &[u8]) -> Option<Self> {
        let due = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
        let warn = i64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
        let flags = *v.get(16)?;
        let organ = std::str::from_utf8(&v[17..]).ok()?;
        Some(Self {
            due_at: from_nanos(due),
            warn_at: from_nanos(warn),
            provisional: flags & PROVISIONAL != 0,
            organ: (!organ.is_empty()).then(|| organ.to_string()),
            warned: flags & WARNED != 0,
            breached: flags & BREACHED != 0,
        })
    }

    /// What it fires next, and when: the warning when it comes before the due and is not out
    /// yet, else the breach until it is out.
    pub fn next(&self) -> Option<(Instant, Kind)> {
        if !self.warned && self.warn_at < self.due_at {
            Some((self.warn_at, Kind::Warned))
        } else if !self.breached {
            Some((self.due_at, Kind::Breached))
        } else {
            None
        }
    }

    /// The same step with `kind` out.
    fn with_fired(&self, kind: Kind) -> Self {
        let mut armed = self.clone();
        match kind {
            Kind::Warned => armed.warned = true,
            Kind::Breached => armed.breached = true,
        }
        armed
    }
}

/// What fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
#[derive(Debug, Clone)]
pub struct Fire {
    pub case_id: CaseId,
    pub step: Step,
    pub kind: Kind,
    pub due_at: Instant,
    pub provisional: bool,
    /// As in [`Armed::organ`].
    pub organ: Option<String>,
}

impl Fire {
    fn of(case_id: &CaseId, step: Step, kind: Kind, armed: &Armed) -> Self {
        let (due_at, provisional, organ) = (armed.due_at, armed.provisional, armed.organ.clone());
        Self { case_id: case_id.clone(), step, kind, due_at, provisional, organ }
    }
}

/// An entry of the due index: a step's next firing. Ordered by instant, so the index is read
/// from its start when timers come due. 32 bytes: a case id is 22.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: i64,
    case: [u8; 22],
    step: Step,
    kind: Kind,
}

impl Due {
    fn of(case: &CaseId, step: Step, armed: &Armed) -> Option<Self> {
        let (at, kind) = armed.next()?;
        Some(Self { at: nanos(at), case: case.as_str().as_bytes().try_into().ok()?, step, kind })
    }

    fn case_id(&self) -> Option<CaseId> {
        CaseId::parse(std::str::from_utf8(&self.case).ok()?).ok()
    }
}

/// Timers fired per round: read from the store together, appended as one run.
pub const FIRE_ROUND: usize = 20_000;

/// Fired timers held before they are marked fired, at most (bounds memory after long downtime).
const FORGET_EVERY: usize = 200_000;

/// Fired timers marked per run of writes, and the pause after each (a burst of 100,000 is
/// marked in about 4 s, once all of it is in the ledger).
const FORGET_CHUNK: usize = 1024;
const FORGET_PAUSE: Duration = Duration::from_millis(40);

/// Present in the store while fired timers may not yet be marked fired durably: from before
/// the first append of a firing until its marks are flushed. A process that finds it more than
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
    /// The timers it covers: those due at or before this instant, Unix nanoseconds.
    pub upto_ns: i64,
}

/// The layout's version: a store without it (or with another) is emptied at start and rebuilt
/// from the ledger ([`upgrade`]).
const FORMAT: &[u8] = b"m/format";
const FORMAT_VERSION: &[u8] = b"2";

/// sled's page cache for the timer store: the records a burst reads come due together and are
/// read ahead ([`Timers::warm`]), so a small cache serves; the due index is in memory.
const STORE_CACHE_BYTES: u64 = 16 << 20;

/// Opens the timer store in the sled database at `path`, readied for this layout
/// ([`upgrade`]); `true` with it when an older store was emptied.
pub fn open_store(path: &std::path::Path) -> Result<(Projection, bool), StoreError> {
    let projection = Projection::open_with_cache(path, "timers", STORE_CACHE_BYTES)?;
    let emptied = upgrade(&projection)?;
    Ok((projection, emptied))
}

/// Readies a store for this layout: one written by an older version (JSON values, a `t/` key
/// per firing) is emptied, and the service then rebuilds it from the ledger. Returns whether it
/// was.
pub fn upgrade(projection: &Projection) -> Result<bool, StoreError> {
    let tree = projection.tree();
    if tree.get(FORMAT)?.as_deref() == Some(FORMAT_VERSION) {
        return Ok(false);
    }
    let emptied = !tree.is_empty();
    tree.clear()?;
    tree.insert(FORMAT, FORMAT_VERSION)?;
    Ok(emptied)
}

/// The indicator counts: `c/<count>/<organ>/<outcome>` → the count and the sequence of the
/// event that last added to it (big-endian u64 each).
const COUNTS: &[u8] = b"c/";

fn count_key(o: &Observation) -> Vec<u8> {
    format!("c/{}/{}/{}", o.count.name(), o.organ, o.outcome).into_bytes()
}

fn labels(o: &Observation) -> Vec<&str> {
    if o.count.by_organ() {
        vec![o.organ.as_str(), o.outcome]
    } else {
        vec![o.outcome]
    }
}

const ARMED: &[u8] = b"a/";

fn armed_key(case: &str, step: Step) -> Vec<u8> {
    let mut key = Vec::with_capacity(case.len() + 4);
    key.extend_from_slice(ARMED);
    key.extend_from_slice(case.as_bytes());
    key.push(b'/');
    key.push(step.code());
    key
}

/// The case and step of an `a/` key.
fn parse_armed_key(key: &[u8]) -> Option<(CaseId, Step)> {
    let rest = key.strip_prefix(ARMED)?;
    let (case, step) = rest.split_at_checked(rest.len().checked_sub(2)?)?;
    let case = CaseId::parse(std::str::from_utf8(case).ok()?).ok()?;
    Some((case, Step::from_code(*step.get(1)?)?))
}

/// The id of a firing: the same whoever fires it, however often.
pub fn firing_id(case: &str, step: &str, due: Instant, kind: &str) -> String {
    format!("{case}:{step}:{}:{kind}", due.timestamp())
}

/// Stores the timer of one open step as a delivered ledger event at `seq` would (a bench or a
/// test filling a store; the service arms through [`Timers::arm`]). `false`: `seq` was
/// applied already.
pub async fn arm_stored(
    projection: &Projection,
    seq: u64,
    case: &CaseId,
    step: Step,
    armed: &Armed,
) -> Result<bool, StoreError> {
    projection.apply(seq, vec![(armed_key(case.as_str(), step), Some(armed.encode()))]).await
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

/// The events of a firing that the case's events `have` do not hold under their own ids.
fn missing(firing: Vec<Envelope>, have: &[Envelope]) -> Vec<Envelope> {
    firing.into_iter().filter(|e| !event::answered(have, &[&e.event_id])).collect()
}

/// A timer that came due, as read for firing: its index entry and what it fires (built once,
/// from its record, for the round that fires it).
struct DueNow {
    due: Due,
    fire: Fire,
}

/// Armed records as written: key and value.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// What a rebuild's replay gathers ([`Timers::replay`]).
#[derive(Default)]
pub struct Replayed {
    /// The armed records not yet handed to the writer, in key order.
    pub records: Records,
    /// Indicator count key → how many.
    pub counts: HashMap<Vec<u8>, u64>,
    /// Breaches owed by steps that closed late, and when.
    pub owed: Vec<(Fire, Instant)>,
    pub cases: u64,
}

impl Replayed {
    /// Adds what another run of cases gathered (its records already handed over).
    pub fn append(&mut self, other: Replayed) {
        for (key, n) in other.counts {
            *self.counts.entry(key).or_default() += n;
        }
        self.owed.extend(other.owed);
        self.cases += other.cases;
    }
}

/// The deadlines service's working parts.
pub struct Timers {
    pub ledger: Ledger,
    pub projection: Projection,
    calendar: RwLock<Arc<Calendar>>,
    pub policy: Policy,
    pub metrics: Metrics,
    /// What fires next, by instant ([`Due`]).
    index: Mutex<BTreeSet<Due>>,
}

impl Timers {
    /// The timers of `projection`, armed by `calendar` and `policy`. The due index starts empty:
    /// [`Timers::load`] reads it from the store.
    pub fn new(ledger: Ledger, projection: Projection, calendar: Calendar, policy: Policy, metrics: Metrics) -> Self {
        Self {
            ledger,
            projection,
            calendar: RwLock::new(Arc::new(calendar)),
            policy,
            metrics,
            index: Mutex::new(BTreeSet::new()),
        }
    }

    /// The holiday calendar in force.
    pub fn calendar(&self) -> Arc<Calendar> {
        self.calendar.read().map(|c| c.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    fn index(&self) -> std::sync::MutexGuard<'_, BTreeSet<Due>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every armed step in the store, with its case and step.
    fn armed_steps(&self) -> impl Iterator<Item = (CaseId, Step, Armed)> + '_ {
        self.projection.tree().scan_prefix(ARMED).flatten().filter_map(|(key, value)| {
            let (case, step) = parse_armed_key(&key)?;
            Some((case, step, Armed::decode(&value)?))
        })
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
        for (case, _, armed) in self.armed_steps() {
            if armed.provisional && cases.last() != Some(&case) {
                cases.push(case);
            }
        }
        for case in &cases {
            let events = self.ledger.events(case).await.map_err(|e| e.to_string())?;
            self.reconcile(case, &events, &events, now, Cause::Calendar).await?;
        }
        Ok(cases.len())
    }

    /// Reads the store at start: the due index, and the armed-timer gauges.
    pub fn load(&self) {
        let mut entries = Vec::new();
        for (case, step, armed) in self.armed_steps() {
            self.metrics.armed.with_label_values(&[step.name()]).inc();
            if armed.provisional {
                self.metrics.provisional.with_label_values(&[step.name()]).inc();
            }
            entries.extend(Due::of(&case, step, &armed));
        }
        // built from sorted entries its nodes are full: about 35 bytes an entry, where one built
        // by inserting in case order takes about 50
        entries.sort_unstable();
        *self.index() = BTreeSet::from_iter(entries);
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

    /// Arms one step as a delivered ledger event at `seq` would, store and index (tests).
    pub async fn arm_step(&self, seq: u64, case: &CaseId, step: Step, armed: &Armed) -> Result<(), String> {
        arm_stored(&self.projection, seq, case, step, armed).await.map_err(|e| e.to_string())?;
        self.index().extend(Due::of(case, step, armed));
        Ok(())
    }

    /// Replays a case's whole history (`all`, oldest first) for a store being rebuilt
    /// ([`crate::rebuild`]): each event of `triggers` is planned as its delivery would have
    /// been, against the case's events up to it, with the case's records held in memory; its
    /// last records, what its events add to the indicators and any breach owed by a step that
    /// closed late are added to `into`. No I/O: cases replay on several threads at once, and
    /// what they gathered is written after ([`Self::write_replayed`]).
    pub fn replay(&self, case: &CaseId, all: &[Envelope], triggers: &[&str], into: &mut Replayed) {
        let calendar = self.calendar();
        let rules = Rules { policy: &self.policy, calendar: &calendar };
        let mut records = Vec::new();
        for (i, event) in all.iter().enumerate() {
            if !triggers.contains(&event.kind.as_str()) {
                continue;
            }
            let Some(plan) = plan::plan(&rules, case, &records, &all[..=i], all, event.at, Cause::Rebuild) else {
                continue;
            };
            into.owed.extend(
                plan.breached_late.iter().map(|(step, armed)| (Fire::of(case, *step, Kind::Breached, armed), event.at)),
            );
            if let Some(o) = &plan.observed {
                *into.counts.entry(count_key(o)).or_default() += 1;
            }
            records = plan::after(&plan);
        }
        into.records.extend(records.into_iter().map(|(step, armed)| (armed_key(case.as_str(), step), armed.encode())));
        into.cases += 1;
    }

    /// Writes the armed records a rebuild's replay hands over, until every sender is gone.
    pub fn write_records(&self, records: std::sync::mpsc::Receiver<Records>) -> Result<(), String> {
        let tree = self.projection.tree();
        for (key, value) in records.into_iter().flatten() {
            tree.insert(key, value).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Writes the rest of what a rebuild's replay gathered (its records went to
    /// [`Self::write_records`] as they gathered): the counts at no ledger position (any event
    /// after the rebuild adds to them), and the breaches owed, appended under their firing ids
    /// (so once).
    pub async fn write_replayed(&self, replayed: Replayed) -> Result<(), String> {
        let tree = self.projection.tree();
        for (key, n) in replayed.counts {
            tree.insert(key, encode_count(n, 0)).map_err(|e| e.to_string())?;
        }
        for (fire, at) in replayed.owed {
            self.append_fire(&fire, at, false).await?;
        }
        Ok(())
    }

    /// Empties the armed records and counts (a rebuild starts from none: one cut short may
    /// have left some), and drops the scratch tree an older version's rebuild used.
    pub fn clear_for_rebuild(&self) -> Result<(), String> {
        let _ = self.projection.db().drop_tree("rebuild");
        self.clear_prefix(ARMED)?;
        self.clear_prefix(COUNTS)
    }

    /// Reads the due index and the armed-timer gauges from the store again (after a rebuild).
    pub fn reload(&self) {
        self.metrics.armed.reset();
        self.metrics.provisional.reset();
        self.load();
    }

    /// Makes the case's timers those of its open steps as of `events` at time `at`
    /// ([`plan::plan`]). For a delivered event, the store records its stream sequence as
    /// applied (a replay is skipped); for a new calendar, dues that move are recorded in the
    /// ledger as `due_recomputed`.
    async fn reconcile(
        &self,
        case: &CaseId,
        events: &[Envelope],
        all: &[Envelope],
        at: Instant,
        cause: Cause,
    ) -> Result<(), String> {
        let calendar = self.calendar();
        let rules = Rules { policy: &self.policy, calendar: &calendar };
        let current: Vec<(Step, Armed)> = self.records_of(case);
        let Some(plan) = plan::plan(&rules, case, &current, events, all, at, cause) else { return Ok(()) };
        for (step, armed) in &plan.breached_late {
            self.append_fire(&Fire::of(case, *step, Kind::Breached, armed), at, false).await?;
        }
        let tree = self.projection.tree();
        let mut writes: Vec<Write> = Vec::new();
        for (step, armed) in &plan.forgotten {
            writes.push((armed_key(case.as_str(), *step), None));
            self.metrics.armed.with_label_values(&[step.name()]).dec();
            if armed.provisional {
                self.metrics.provisional.with_label_values(&[step.name()]).dec();
            }
        }
        for (step, armed) in &plan.armed {
            writes.push((armed_key(case.as_str(), *step), Some(armed.encode())));
            self.metrics.armed.with_label_values(&[step.name()]).inc();
            if armed.provisional {
                self.metrics.provisional.with_label_values(&[step.name()]).inc();
            }
        }
        for (step, from, to) in &plan.moved {
            let id = format!("{case}:{}:{}:recomputed:{}", step.name(), from.timestamp(), to.at.timestamp());
            let data = EventData::DueRecomputed {
                step: *step,
                previous_due_at: *from,
                due_at: to.at,
                provisional: to.provisional,
            };
            let armed = Armed::new(to.at, to.at, to.provisional, plan.organ.clone());
            self.append(&Fire::of(case, *step, Kind::Breached, &armed), &id, data, at).await?;
            self.metrics.recomputed.with_label_values(&[step.name()]).inc();
        }
        // the indicators: what the event adds, written with its position; a count that already
        // holds this event (applied before a crash, its position not) is not added to again
        let mut counted = None;
        if let (Some(o), Cause::Event(seq)) = (&plan.observed, cause) {
            let key = count_key(o);
            let (n, last) = tree.get(&key).map_err(|e| e.to_string())?.map_or((0, 0), |v| decode_count(&v));
            if seq > last {
                writes.push((key, Some(encode_count(n + 1, seq))));
                counted = Some(o);
            }
        }
        let applied = match cause {
            Cause::Event(seq) => self.projection.apply(seq, writes).await.map_err(|e| e.to_string())?,
            Cause::Calendar | Cause::Rebuild => {
                write_in_order(tree, writes).map(|_| true).map_err(|e| e.to_string())?
            }
        };
        if applied {
            let mut index = self.index();
            for (step, armed) in &plan.forgotten {
                if let Some(due) = Due::of(case, *step, armed) {
                    index.remove(&due);
                }
            }
            // the kept are indexed again: after an event applied twice, their entries may be gone
            index.extend(plan.kept.iter().chain(&plan.armed).filter_map(|(step, armed)| Due::of(case, *step, armed)));
        }
        if let Some(o) = counted {
            self.metrics.count(o.count).with_label_values(&labels(o)).inc();
        }
        Ok(())
    }

    /// A case's armed records, in step order.
    fn records_of(&self, case: &CaseId) -> Vec<(Step, Armed)> {
        let mut prefix = ARMED.to_vec();
        prefix.extend_from_slice(case.as_str().as_bytes());
        prefix.push(b'/');
        self.projection
            .tree()
            .scan_prefix(&prefix)
            .flatten()
            .filter_map(|(key, value)| Some((parse_armed_key(&key)?.1, Armed::decode(&value)?)))
            .collect()
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
            counter.inc_by(decode_count(&item.1).0.saturating_sub(counter.get()));
        }
    }

    /// Forgets every indicator count (a rebuild starts from none).
    pub fn clear_counts(&self) -> Result<(), String> {
        self.clear_prefix(COUNTS)
    }

    fn clear_prefix(&self, prefix: &[u8]) -> Result<(), String> {
        let tree = self.projection.tree();
        for item in tree.scan_prefix(prefix).flatten() {
            tree.remove(item.0).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Open steps past their due at `now`, by step and organ, from the store.
    pub fn overdue(&self, now: Instant) -> BTreeMap<(String, String), i64> {
        let mut by = BTreeMap::new();
        for (_, step, armed) in self.armed_steps() {
            if armed.due_at < now {
                let organ = armed.organ.unwrap_or_else(|| NO_ORGAN.to_string());
                *by.entry((step.name().to_string(), organ)).or_insert(0) += 1;
            }
        }
        by
    }

    /// The index entries due at or before `upto` (nanoseconds) after `after`, at most `max`.
    fn due_entries(&self, after: Option<Due>, upto: i64, max: usize) -> Vec<Due> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let index = self.index();
        index.range((from, Bound::Unbounded)).take_while(|d| d.at <= upto).take(max).copied().collect()
    }

    /// Each entry's record as it stands, when its next firing is still the entry's; an entry
    /// whose record has changed or gone is dropped from the index.
    fn read_due(&self, entries: Vec<Due>) -> Result<Vec<DueNow>, String> {
        let tree = self.projection.tree();
        let mut due = Vec::with_capacity(entries.len());
        let mut stale = Vec::new();
        for entry in entries {
            let Some(case) = entry.case_id() else {
                stale.push(entry);
                continue;
            };
            let record = tree.get(armed_key(case.as_str(), entry.step)).map_err(|e| e.to_string())?;
            match record.and_then(|r| Armed::decode(&r)) {
                Some(armed) if Due::of(&case, entry.step, &armed) == Some(entry) => {
                    due.push(DueNow { due: entry, fire: Fire::of(&case, entry.step, entry.kind, &armed) });
                }
                _ => stale.push(entry),
            }
        }
        let mut index = self.index();
        for entry in stale {
            index.remove(&entry);
        }
        Ok(due)
    }

    /// Marks fired timers as out in their records, [`FORGET_CHUNK`] per run of writes with a
    /// pause between (sled holds a fast run of writes in memory until its flusher catches up),
    /// and moves their index entries on to what each fires next. A record whose next firing is
    /// no longer the one fired (the step moved or closed meanwhile) is left as the change made
    /// it.
    async fn forget_all(&self, fired: Vec<Due>) -> Result<(), String> {
        let tree = self.projection.tree();
        for chunk in fired.chunks(FORGET_CHUNK) {
            let mut next = Vec::with_capacity(chunk.len());
            for due in chunk {
                let Some(case) = due.case_id() else { continue };
                let key = armed_key(case.as_str(), due.step);
                let Some(record) = tree.get(&key).map_err(|e| e.to_string())? else { continue };
                let Some(armed) = Armed::decode(&record).filter(|a| Due::of(&case, due.step, a) == Some(*due)) else {
                    continue;
                };
                let armed = armed.with_fired(due.kind);
                let swapped =
                    tree.compare_and_swap(key, Some(record), Some(armed.encode())).map_err(|e| e.to_string())?;
                if swapped.is_ok() {
                    next.extend(Due::of(&case, due.step, &armed));
                }
            }
            {
                let mut index = self.index();
                for due in chunk {
                    index.remove(due);
                }
                index.extend(next);
            }
            tokio::time::sleep(FORGET_PAUSE).await;
        }
        Ok(())
    }

    /// Fires every timer due at or before `now`, oldest first, in rounds of [`FIRE_ROUND`]:
    /// each round's events go to the ledger as one run of appends
    /// ([`Ledger::append_rendered_with`]), and a timer is marked fired only once its events are
    /// in the ledger — after the whole burst is out, so the store's writes do not slow the
    /// firing. A step whose warning fires has its breach indexed then, and fired on a later call.
    pub async fn fire_due(&self, now: Instant) -> Result<usize, String> {
        let upto = nanos(now);
        let mut fired = self.refire_checked(now, upto).await?;
        let mut marked = false;
        let mut after = None;
        let mut forget: Vec<Due> = Vec::new();
        let outcome = loop {
            let entries = self.due_entries(after, upto, FIRE_ROUND);
            let Some(last) = entries.last().copied() else { break Ok(()) };
            after = Some(last);
            let full = entries.len() == FIRE_ROUND;
            let due = self.read_due(entries)?;
            if due.is_empty() {
                if full {
                    continue;
                }
                break Ok(());
            }
            if !marked {
                self.mark_firing(upto).await?;
                marked = true;
            }
            // rendered as they are sent, so nats-server is busy while the next is made
            let mut renderer = Renderer::new(self.ledger.node(), to_cst(now));
            let events: Box<dyn Iterator<Item = Outgoing> + Send + '_> =
                Box::new(due.iter().flat_map(move |t| self.rendered(&mut renderer, &t.fire, now)));
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
            fired += confirmed;
            forget.extend(due.iter().take(confirmed).map(|t| t.due));
            if let Err(partial) = result {
                break Err(partial.to_string());
            }
            if !full {
                break Ok(());
            }
            if forget.len() >= FORGET_EVERY {
                self.forget_all(std::mem::take(&mut forget)).await?;
            }
        };
        self.forget_all(forget).await?;
        if marked && outcome.is_ok() {
            self.unmark_firing().await?;
        }
        outcome.map(|()| fired)
    }

    /// Writes (or widens) [`FIRING_MARK`] durably, before a firing's first append.
    async fn mark_firing(&self, upto: i64) -> Result<(), String> {
        let tree = self.projection.tree();
        let mut mark = FiringMark { began_ms: chrono::Utc::now().timestamp_millis(), upto_ns: upto };
        if let Some(old) = tree.get(FIRING_MARK).map_err(|e| e.to_string())? {
            if let Ok(old) = serde_json::from_slice::<FiringMark>(&old) {
                mark.began_ms = mark.began_ms.min(old.began_ms);
                mark.upto_ns = mark.upto_ns.max(old.upto_ns);
            }
        }
        tree.insert(FIRING_MARK, serde_json::to_vec(&mark).expect("serializes")).map_err(|e| e.to_string())?;
        self.projection.flush().await.map_err(|e| e.to_string())
    }

    /// Removes [`FIRING_MARK`] once the marks of the timers it covers are durable.
    async fn unmark_firing(&self) -> Result<(), String> {
        self.projection.flush().await.map_err(|e| e.to_string())?;
        self.projection.tree().remove(FIRING_MARK).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// After a crash in the middle of a firing and a restart past [`recheck_after`]: fires the
    /// timers the old [`FIRING_MARK`] covers one by one, appending only the events their cases
    /// do not already have. Slow (a ledger read per timer), and needed only then.
    async fn refire_checked(&self, now: Instant, upto: i64) -> Result<usize, String> {
        let tree = self.projection.tree();
        let Some(mark) = tree.get(FIRING_MARK).map_err(|e| e.to_string())? else { return Ok(0) };
        let mark: Option<FiringMark> = serde_json::from_slice(&mark).ok();
        let age = mark.as_ref().map_or(i64::MAX, |m| chrono::Utc::now().timestamp_millis() - m.began_ms);
        if age < recheck_after().as_millis() as i64 {
            return Ok(0);
        }
        let end = mark.map_or(upto, |m| m.upto_ns.min(upto));
        let covered = self.read_due(self.due_entries(None, end, usize::MAX))?;
        tracing::warn!(
            timers = covered.len(),
            age_s = age / 1000,
            "an unfinished firing past the duplicate window; checking each timer against the ledger"
        );
        let fired = covered.len();
        for DueNow { fire, .. } in &covered {
            let have = self.ledger.events(&fire.case_id).await.map_err(|e| e.to_string())?;
            for event in missing(self.firing(fire, now, true), &have) {
                self.ledger.append(&event, Expect::Any).await.map_err(|e| e.to_string())?;
            }
            self.record(fire, true);
        }
        self.forget_all(covered.into_iter().map(|t| t.due).collect()).await?;
        self.unmark_firing().await?;
        Ok(fired)
    }

    /// Reads the records of the timers due up to `at` (at most `max` of them) without firing
    /// them, so that their pages are in sled's cache when they come due: a burst then reads
    /// from memory instead of paging its nodes in from the log while it appends. Returns how
    /// many.
    pub fn warm(&self, at: Instant, max: usize) -> usize {
        let tree = self.projection.tree();
        let read =
            |d: &Due| d.case_id().is_some_and(|c| tree.get(armed_key(c.as_str(), d.step)).is_ok_and(|r| r.is_some()));
        self.due_entries(None, nanos(at), max).iter().filter(|d| read(d)).count()
    }

    /// The instant of the earliest armed timer, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.index().first().map(|d| from_nanos(d.at))
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
    fn confirm(&self, due: &[DueNow], next: &mut usize, events: &mut usize, stored: usize) {
        while let Some(DueNow { fire, .. }) = due.get(*next) {
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

    #[test]
    fn a_record_reads_back_as_written_and_says_what_fires_next() {
        let (warn, due) = (fixtures::at(10, 9), fixtures::at(13, 17) + chrono::Duration::nanoseconds(123));
        let mut armed = Armed::new(due, warn, true, Some("320211-zjj".into()));
        assert_eq!(armed.encode().len(), 17 + 10);
        assert_eq!(Armed::decode(&armed.encode()), Some(armed.clone()));
        assert_eq!(armed.next(), Some((warn, Kind::Warned)));
        armed = armed.with_fired(Kind::Warned);
        assert_eq!(Armed::decode(&armed.encode()).and_then(|a| a.next()), Some((due, Kind::Breached)));
        armed = armed.with_fired(Kind::Breached);
        assert_eq!(Armed::decode(&armed.encode()).and_then(|a| a.next()), None);
        // no warning when it would come at the due or after
        assert_eq!(Armed::new(due, due, false, None).next(), Some((due, Kind::Breached)));
        assert_eq!(Armed::decode(&Armed::new(due, due, false, None).encode()).unwrap().organ, None);
        assert_eq!(Armed::decode(b"short"), None);
    }

    #[tokio::test]
    async fn a_store_of_the_older_layout_is_emptied_for_a_rebuild_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let old = Projection::open(dir.path(), "timers").unwrap();
            let mut batch = xinfang_shared::projection::Batch::default();
            batch.insert(&b"t/0000018c8f0a0000/320211-20261127-000001/acceptance/b"[..], &b"{}"[..]);
            old.apply(7, batch).await.unwrap();
            old.flush().await.unwrap();
        }
        let (store, emptied) = open_store(dir.path()).unwrap();
        assert!(emptied);
        assert_eq!((store.last_applied(), store.tree().len()), (0, 1), "only the layout's version is left");
        drop(store);
        let (store, emptied) = open_store(dir.path()).unwrap();
        assert!(!emptied, "a store of this layout is kept");
        let case = CaseId::parse("320211-20261127-000001").unwrap();
        let at = fixtures::at(3, 9);
        assert!(arm_stored(&store, 1, &case, Step::Acceptance, &Armed::new(at, at, false, None)).await.unwrap());
        drop(store);
        let (store, emptied) = open_store(dir.path()).unwrap();
        assert!(!emptied);
        assert_eq!(store.last_applied(), 1);
    }

    #[test]
    fn a_record_key_names_its_case_and_step() {
        let case = CaseId::parse("320211-20261127-000042").unwrap();
        for step in Step::ALL {
            assert_eq!(parse_armed_key(&armed_key(case.as_str(), step)), Some((case.clone(), step)));
        }
        assert_eq!(parse_armed_key(b"a/nonsense/x"), None);
        // the index orders by instant first
        let armed = |at| Armed::new(at, at, false, None);
        let early = Due::of(&case, Step::Review, &armed(fixtures::at(3, 9))).unwrap();
        let late = Due::of(&case, Step::Acceptance, &armed(fixtures::at(4, 9))).unwrap();
        assert!(early < late);
    }

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
