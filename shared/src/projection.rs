//! A sled projection that stores the last applied stream sequence together with the state, in
//! one atomic batch, so a replay after a crash skips what is already applied and a lost
//! directory is rebuilt from the stream (the consumer starts after [`Projection::last_applied`]).
//!
//! Batches are not fsynced one by one: sled flushes every few hundred milliseconds and recovers
//! to a consistent prefix of batches after a crash. A consumer that acked events whose batches
//! were lost is then ahead of the projection, and the consumer helper recreates it from
//! `last_applied() + 1` (`consumer::Spec::resume_after`), so nothing acked is ever missing.

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
        let db = sled::Config::new().path(path).mode(sled::Mode::HighThroughput).cache_capacity(CACHE_BYTES).open()?;
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

    /// Writes everything applied so far to disk (at shutdown).
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(|_| ())
    }
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
}
