//! A sled projection that stores the last applied stream sequence together with the state, in
//! one atomic batch, so a replay after a crash skips what is already applied and a lost
//! directory is rebuilt from the stream (the consumer starts after [`Projection::last_applied`]).
//!
//! Batches are not fsynced one by one: sled flushes every few hundred milliseconds and recovers
//! to a consistent prefix of batches after a crash. A consumer that acked events whose batches
//! were lost is then ahead of the projection, and the consumer helper recreates it from
//! `last_applied() + 1` (`consumer::Spec::resume_after`), so nothing acked is ever missing.
//!
//! A projection that writes a lot per event can skip the batch ([`Projection::apply_in_order`]):
//! a sled batch costs about ten plain writes and doubles the log on disk (docs/benchmarks.md,
//! the timer store). Its writes must then converge when an event is applied a second time.

use std::path::Path;

use sled::Db;
pub use sled::{Batch, Error as StoreError, Tree};

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

    /// Applies `batch` atomically as the effect of the event at stream sequence `seq`.
    /// Returns `false` (and writes nothing) when `seq` was already applied.
    pub async fn apply(&self, seq: u64, mut batch: Batch) -> Result<bool, sled::Error> {
        if seq <= self.last_applied() {
            return Ok(false);
        }
        batch.insert(LAST_SEQ, &seq.to_be_bytes());
        self.tree.apply_batch(batch)?;
        Ok(true)
    }

    /// Applies `writes` one at a time, in order, then records `seq` as applied; returns `false`
    /// (and writes nothing) when `seq` was already applied. No batch: sled recovers a prefix of
    /// its log after a crash, so when `seq` is found applied every write before it is there too.
    /// A crash can keep some of the writes without `seq`, and the event is then applied again:
    /// the caller's writes must converge on a second application (each replaces a whole record;
    /// an increment carries the sequence it counts, as the deadlines service's counts do).
    pub async fn apply_in_order(&self, seq: u64, writes: Vec<Write>) -> Result<bool, sled::Error> {
        if seq <= self.last_applied() {
            return Ok(false);
        }
        write_in_order(&self.tree, writes)?;
        self.tree.insert(LAST_SEQ, &seq.to_be_bytes())?;
        Ok(true)
    }

    /// Writes everything applied so far to disk (at shutdown).
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(|_| ())
    }
}

/// One write of [`Projection::apply_in_order`]: a key and its new value, or `None` to remove it.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

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
        assert!(p.apply_in_order(3, writes.clone()).await.unwrap());
        assert_eq!((p.tree().get("a").unwrap(), p.last_applied()), (None, 3));
        p.tree().remove("b").unwrap();
        assert!(!p.apply_in_order(3, writes).await.unwrap(), "a replay is skipped");
        assert_eq!(p.tree().get("b").unwrap(), None);
    }
}
