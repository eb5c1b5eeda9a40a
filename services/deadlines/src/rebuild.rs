//! Rebuilding a new or lost timer store from the ledger in one sequential read, instead of
//! replaying it event by event through the consumer (a ledger read per event: minutes to hours
//! for a large ledger, and a load on nats-server that starves the node's other services).
//!
//! 1. The ledger's last sequence is noted and every case event up to it is read once, through
//!    one consumer, into a scratch file beside the store, with where each event lies kept in
//!    memory (40 bytes an event), then sorted by case.
//! 2. Each case's history is replayed as its deliveries would have been, the case's records
//!    in memory and only its last state written ([`Timers::replay`]): the same timers, and no
//!    firing that is in the ledger armed again; the indicator counts are counted again from
//!    none.
//! 3. The ledger position is recorded, so the consumer resumes after the last event read.
//!
//! A crash before step 3 leaves the store at position 0 and the rebuild starts over from an
//! empty store. Nothing fires during a rebuild: it runs before the firing loop starts.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant as Clock;

use xinfang_shared::event::Envelope;
use xinfang_shared::ids::CaseId;
use xinfang_shared::ledger;
use xinfang_shared::projection::Batch;
use xinfang_shared::subjects;

use crate::timers::{Records, Replayed, Timers};

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
/// the ledger has events, reading it through the file `scratch` (removed after); otherwise does
/// nothing and returns `None`.
pub async fn rebuild(
    timers: &Arc<Timers>,
    triggers: &'static [&'static str],
    scratch: &Path,
) -> Result<Option<Rebuilt>, String> {
    if timers.projection.last_applied() > 0 {
        return Ok(None);
    }
    let started = Clock::now();
    timers.clear_for_rebuild()?;
    let mut read = Scratch::create(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
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
            if !read.push(case, payload).map_err(|e| e.to_string())? {
                tracing::warn!(seq, case, "skipping a ledger entry under no case id");
            }
            Ok(())
        },
    )
    .await
    .map_err(|e| e.to_string());
    let read = read.finish().map_err(|e| e.to_string());
    let (upto, read) = match (upto, read) {
        (Ok(upto), Ok(read)) => (upto, read),
        (Err(e), _) | (_, Err(e)) => {
            let _ = std::fs::remove_file(scratch);
            return Err(e);
        }
    };
    if upto == 0 {
        let _ = std::fs::remove_file(scratch);
        return Ok(None);
    }
    let read_secs = started.elapsed().as_secs_f64();
    let started = Clock::now();
    let events = read.entries.len() as u64;
    let replayed = replay(timers, triggers, read).await;
    let _ = std::fs::remove_file(scratch);
    let cases = replayed?;
    timers.projection.apply(upto, Batch::default()).await.map_err(|e| e.to_string())?;
    timers.projection.flush().await.map_err(|e| e.to_string())?;
    timers.reload();
    timers.metrics.rebuilds.inc();
    timers.metrics.rebuilt_events.inc_by(events);
    Ok(Some(Rebuilt { events, cases, upto, read_secs, replay_secs: started.elapsed().as_secs_f64() }))
}

/// Replays every case read on as many threads as there are cores (up to [`MAX_THREADS`]), each
/// taking a run of cases in key order; meanwhile one thread writes the armed records they hand
/// over ([`RECORDS_AT_A_TIME`] at a time: sled takes them several times faster from one thread
/// than from several), then the rest of what they gathered is written. Returns how many cases.
async fn replay(timers: &Arc<Timers>, triggers: &'static [&'static str], read: Read) -> Result<u64, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_THREADS);
    let shares = read.shares(threads);
    let replaying = timers.clone();
    let replayed = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let (to_writer, records) = std::sync::mpsc::sync_channel::<Records>(2 * threads);
            let workers = shares
                .into_iter()
                .map(|share| {
                    let (timers, read, to_writer) = (&replaying, &read, to_writer.clone());
                    std::thread::Builder::new()
                        .name("rebuild".into())
                        .spawn_scoped(scope, move || replay_share(timers, triggers, read, share, to_writer))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            drop(to_writer);
            // until every worker is done (or one failed and dropped its sender)
            let written = replaying.write_records(records);
            let mut all = Replayed::default();
            for worker in workers {
                all.append(worker.join().map_err(|_| "a replay thread panicked".to_string())??);
            }
            written?;
            Ok::<_, String>(all)
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    let cases = replayed.cases;
    timers.write_replayed(replayed).await?;
    Ok(cases)
}

/// Threads a replay runs on, at most.
const MAX_THREADS: usize = 4;

/// Armed records handed to the writer at a time.
const RECORDS_AT_A_TIME: usize = 4096;

/// Replays the cases of `events` (a run of whole cases of those read), handing their armed
/// records to the writer as they gather.
fn replay_share(
    timers: &Timers,
    triggers: &[&str],
    read: &Read,
    events: std::ops::Range<usize>,
    to_writer: std::sync::mpsc::SyncSender<Records>,
) -> Result<Replayed, String> {
    let mut replayed = Replayed::default();
    let mut bytes = Vec::new();
    let mut history: Vec<Envelope> = Vec::new();
    for run in read.entries[events].chunk_by(|a, b| a.case == b.case) {
        let Some(case) = std::str::from_utf8(&run[0].case).ok().and_then(|c| CaseId::parse(c).ok()) else { continue };
        history.clear();
        for entry in run {
            bytes.resize(entry.len as usize, 0);
            read.file.read_exact_at(&mut bytes, entry.offset).map_err(|e| e.to_string())?;
            match Envelope::for_rules(&bytes) {
                Ok(event) => history.push(event),
                Err(e) => tracing::warn!(%case, error = %e, "skipping an unreadable ledger entry"),
            }
        }
        timers.replay(&case, &history, triggers, &mut replayed);
        if replayed.records.len() >= RECORDS_AT_A_TIME {
            let full = std::mem::take(&mut replayed.records);
            to_writer.send(full).map_err(|_| "the record writer stopped".to_string())?;
        }
    }
    to_writer.send(std::mem::take(&mut replayed.records)).map_err(|_| "the record writer stopped".to_string())?;
    Ok(replayed)
}

/// A case id's bytes (`320211-20261127-000042`).
type CaseKey = [u8; 22];

/// Where one event read lies in the scratch file.
struct Entry {
    case: CaseKey,
    offset: u64,
    len: u32,
}

/// The scratch file being written: every event's bytes one after another, and where each lies.
struct Scratch {
    out: BufWriter<File>,
    file: File,
    len: u64,
    entries: Vec<Entry>,
}

/// The scratch file written, its entries sorted by case (each case's in ledger order).
struct Read {
    file: File,
    entries: Vec<Entry>,
}

impl Scratch {
    fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path)?;
        Ok(Self { out: BufWriter::with_capacity(1 << 20, file.try_clone()?), file, len: 0, entries: Vec::new() })
    }

    /// Adds one event of `case` (`false`: not a case id, skipped).
    fn push(&mut self, case: &str, payload: &[u8]) -> std::io::Result<bool> {
        let Ok(case) = CaseKey::try_from(case.as_bytes()) else { return Ok(false) };
        let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
        self.out.write_all(payload)?;
        self.entries.push(Entry { case, offset: self.len, len });
        self.len += u64::from(len);
        Ok(true)
    }

    fn finish(self) -> std::io::Result<Read> {
        self.out.into_inner().map_err(|e| e.into_error())?;
        let mut entries = self.entries;
        // stable: each case's events stay in ledger order
        entries.sort_by_key(|e| e.case);
        Ok(Read { file: self.file, entries })
    }
}

impl Read {
    /// The entries split into `n` runs of whole cases.
    fn shares(&self, n: usize) -> Vec<std::ops::Range<usize>> {
        let mut shares = Vec::with_capacity(n);
        let mut start = 0;
        for k in 1..=n {
            let mut end = (self.entries.len() * k / n).max(start);
            while end < self.entries.len() && end > 0 && self.entries[end].case == self.entries[end - 1].case {
                end += 1;
            }
            shares.push(start..end);
            start = end;
        }
        shares
    }
}
