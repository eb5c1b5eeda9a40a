//! Rebuilding a new or lost timer store from the ledger in one sequential read, instead of
//! replaying it event by event through the consumer (a ledger read per event: minutes to hours
//! for a large ledger, and a load on nats-server that starves the node's other services).
//!
//! 1. The ledger's last sequence is noted and every case event up to it is read once, through
//!    one consumer, into a scratch tree keyed by case and sequence (bounded memory).
//! 2. Each case's history is replayed into the timers as its deliveries would have been
//!    ([`Timers::replay`]): the same timers, and no firing that is in the ledger armed again;
//!    the indicator counts are counted again from none.
//! 3. The ledger position is recorded, so the consumer resumes after the last event read.
//!
//! A crash before step 3 leaves the store at position 0 and the rebuild starts over; arming is
//! idempotent. Nothing fires during a rebuild: it runs before the firing loop starts.

use std::time::Instant as Clock;

use xinfang_shared::event::Envelope;
use xinfang_shared::ids::CaseId;
use xinfang_shared::ledger;
use xinfang_shared::projection::Batch;
use xinfang_shared::subjects;

use crate::timers::Timers;

/// The scratch tree of a rebuild (emptied before and after).
const SCRATCH: &str = "rebuild";

/// Scratch entries written per sled batch while reading.
const SCRATCH_BATCH: usize = 2048;

/// What a rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    /// Ledger events read.
    pub events: u64,
    /// Cases replayed.
    pub cases: u64,
    /// The ledger sequence the store is now at.
    pub upto: u64,
    /// Seconds spent reading the ledger, then replaying it.
    pub read_secs: f64,
    pub replay_secs: f64,
}

/// Rebuilds the store from the ledger when it has applied nothing yet (a new or lost store) and
/// the ledger has events; otherwise does nothing and returns `None`.
pub async fn rebuild(timers: &Timers, triggers: &[&str]) -> Result<Option<Rebuilt>, String> {
    if timers.projection.last_applied() > 0 {
        return Ok(None);
    }
    let started = Clock::now();
    // the counts of a rebuild that did not finish would be added to again
    timers.clear_counts()?;
    let scratch = timers.projection.db().open_tree(SCRATCH).map_err(|e| e.to_string())?;
    scratch.clear().map_err(|e| e.to_string())?;
    let mut batch = Batch::default();
    let (mut pending, mut events) = (0usize, 0u64);
    let node = timers.ledger.node().clone();
    let upto = ledger::scan_stream(
        timers.ledger.jetstream(),
        timers.ledger.stream_name(),
        subjects::case_events(&node),
        |seq, subject, payload| {
            // the case from the subject (`xf.<node>.case.<case>.<type>`): each event is parsed
            // once, when its case is replayed
            let Some(case) = subjects::case_of(subject) else {
                tracing::warn!(seq, "skipping a ledger entry outside any case");
                return Ok(());
            };
            batch.insert(scratch_key(case, seq), payload);
            pending += 1;
            events += 1;
            if pending >= SCRATCH_BATCH {
                scratch.apply_batch(std::mem::take(&mut batch)).map_err(|e| e.to_string())?;
                pending = 0;
            }
            Ok(())
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    scratch.apply_batch(batch).map_err(|e| e.to_string())?;
    if upto == 0 {
        return Ok(None);
    }
    let read_secs = started.elapsed().as_secs_f64();
    let started = Clock::now();
    let mut cases = 0u64;
    let mut case: Option<CaseId> = None;
    let mut history: Vec<Envelope> = Vec::new();
    for item in scratch.iter() {
        let (_, value) = item.map_err(|e| e.to_string())?;
        let Ok(event) = Envelope::from_slice(&value) else { continue };
        if case.as_ref() != Some(&event.case_id) {
            if let Some(done) = case.take() {
                timers.replay(&done, &history, triggers).await?;
                cases += 1;
            }
            history.clear();
            case = Some(event.case_id.clone());
        }
        history.push(event);
    }
    if let Some(done) = case {
        timers.replay(&done, &history, triggers).await?;
        cases += 1;
    }
    timers.projection.apply(upto, Batch::default()).await.map_err(|e| e.to_string())?;
    timers.projection.flush().await.map_err(|e| e.to_string())?;
    scratch.clear().map_err(|e| e.to_string())?;
    let _ = timers.projection.db().drop_tree(SCRATCH);
    timers.metrics.rebuilds.inc();
    timers.metrics.rebuilt_events.inc_by(events);
    Ok(Some(Rebuilt { events, cases, upto, read_secs, replay_secs: started.elapsed().as_secs_f64() }))
}

/// A case's events sort together, in ledger order.
fn scratch_key(case: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(case.len() + 9);
    key.extend_from_slice(case.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}
