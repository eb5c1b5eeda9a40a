//! A sled projection that stores the last applied stream sequence with the state, so a replay
//! after a crash skips what is already applied and a lost directory is rebuilt from the stream
//! (the consumer starts after [`Projection::last_applied`]).
//!
//! Writes are not fsynced one by one: sled flushes every few hundred milliseconds and recovers
//! a prefix of its log after a crash. A consumer that acked events whose writes were lost is
//! then ahead of the projection, and the consumer helper recreates it from
//! `last_applied() + 1` (`consumer::Spec::resume_after`), so nothing acked is ever missing.
//!
//! An event's writes go in one at a time, in order, and its sequence last — not as a sled
//! batch. A sled batch seals and writes out sled's log buffer before and after it: two writes
//! to the file and, through sled's I/O pool (which wakes all its idle threads for each job),
//! some fourteen thread wakeups per event; at 870 petitions a second that was a tenth of the
//! node's two cores (docs/benchmarks.md, "Fourth pass"). A crash can therefore keep part of an
//! event's writes, and the event is applied again: every projection's writes converge.

use std::path::Path;

use sled::Db;
use sled::IVec;
pub use sled::{Error as StoreError, Tree};

const LAST_SEQ: &[u8] = b"\x00last_applied_seq";

/// sled's page cache per database (its default is 1 GiB): a service's memory stays bounded
/// whatever the size of its store (docs/benchmarks.md, 1,000,000 timers).
const CACHE_BYTES: u64 = 64 << 20;

/// One projection: a sled tree whose keys must not start with a NUL byte (reserved).
#[derive(Clone)]
pub struct Projection {
    db: Db,
    tree: Tree,
}

impl Projection {
    /// Opens (or creates) the projection `name` in the sled database at `path`.
    pub fn open(path: &Path, name: &str) -> Result<Self, sled::Error> {
        Self::open_with_cache(path, name, CACHE_BYTES)
    }

    /// [`Projection::open`] with a page cache of `cache_bytes` as sled counts them (a full
    /// cache holds about 2.5 times that in memory: a scan of 1,000,000 small records peaks at
    /// 220 MB with 64 MiB, 114 MB with 16 MiB).
    pub fn open_with_cache(path: &Path, name: &str, cache_bytes: u64) -> Result<Self, sled::Error> {
        let db = sled::Config::new().path(path).mode(sled::Mode::HighThroughput).cache_capacity(cache_bytes).open()?;
        Self::in_db(&db, name)
    }

    /// The projection `name` inside an already open database.
    pub fn in_db(db: &Db, name: &str) -> Result<Self, sled::Error> {
        Ok(Self { tree: db.open_tree(name)?, db: db.clone() })
    }

    /// The tree with the projection's state.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The database, for other trees.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The stream sequence of the last applied event (0: none).
    pub fn last_applied(&self) -> u64 {
        self.tree
            .get(LAST_SEQ)
            .ok()
            .flatten()
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0)
    }

    /// Applies `batch` as the effect of the event at stream sequence `seq`: its writes one at a
    /// time, in order, then `seq` as applied; returns `false` (and writes nothing) when `seq` was
    /// already applied. No sled batch: sled recovers a prefix of its log after a crash, so when
    /// `seq` is found applied every write before it is there too. A crash can keep some of the
    /// writes without `seq`, and the event is then applied again: the caller's writes must
    /// converge on a second application (each replaces a whole record; an increment carries the
    /// sequence it counts, [`encode_count`]; a record that moves is written at its new key before
    /// it is removed from its old one).
    pub async fn apply(&self, seq: u64, batch: impl Into<Batch>) -> Result<bool, sled::Error> {
        if seq <= self.last_applied() {
            return Ok(false);
        }
        write_in_order(&self.tree, batch.into().writes)?;
        self.tree.insert(LAST_SEQ, &seq.to_be_bytes())?;
        Ok(true)
    }

    /// Writes everything applied so far to disk (at shutdown).
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(|_| ())
    }
}

/// One write of a [`Batch`]: a key and its new value, or `None` to remove it.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// A count as a projection stores it: the count and the ledger sequence of the event it last
/// counted (big-endian u64 each), so an event applied again after a crash is not counted twice.
pub fn encode_count(n: u64, seq: u64) -> Vec<u8> {
    [n.to_be_bytes(), seq.to_be_bytes()].concat()
}

/// The count and the sequence of [`encode_count`]; zeros for what is not one.
pub fn decode_count(v: &[u8]) -> (u64, u64) {
    let half = |r: std::ops::Range<usize>| v.get(r).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
    (half(0..8).unwrap_or(0), half(8..16).unwrap_or(0))
}

/// The writes of one event for [`Projection::apply`], in order.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    writes: Vec<Write>,
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.writes.push((key.into().to_vec(), Some(value.into().to_vec())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<IVec>) {
        self.writes.push((key.into().to_vec(), None));
    }

    /// The writes, in order (a test cutting an event's writes short, as a crash would).
    pub fn into_writes(self) -> Vec<Write> {
        self.writes
    }
}

impl From<Vec<Write>> for Batch {
    fn from(writes: Vec<Write>) -> Self {
        Self { writes }
    }
}

/// Writes `writes` into `tree` one at a time, in order.
pub fn write_in_order(tree: &Tree, writes: Vec<Write>) -> Result<(), sled::Error> {
    for (key, value) in writes {
        match value {
            Some(value) => tree.insert(key, value)?,
            None => tree.remove(key)?,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn applies_once_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = Projection::open(dir.path(), "cases").unwrap();
            assert_eq!(p.last_applied(), 0);
            let mut b = Batch::default();
            b.insert("a", "1");
            assert!(p.apply(5, b).await.unwrap());
            let mut b = Batch::default();
            b.insert("a", "2");
            assert!(!p.apply(5, b).await.unwrap(), "a replay is skipped");
            p.flush().await.unwrap();
        }
        let p = Projection::open(dir.path(), "cases").unwrap();
        assert_eq!(p.last_applied(), 5);
        assert_eq!(p.tree().get("a").unwrap().unwrap().as_ref(), b"1");
    }

    #[tokio::test]
    async fn writes_in_order_once_and_records_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let p = Projection::open(dir.path(), "cases").unwrap();
        let writes =
            vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"a".to_vec(), None), (b"b".to_vec(), Some(b"2".to_vec()))];
        assert!(p.apply(3, writes.clone()).await.unwrap());
        assert_eq!((p.tree().get("a").unwrap(), p.last_applied()), (None, 3));
        p.tree().remove("b").unwrap();
        assert!(!p.apply(3, writes).await.unwrap(), "a replay is skipped");
        assert_eq!(p.tree().get("b").unwrap(), None);
    }
}
