//! Case id allocation that survives restarts and several intake instances: the per-day
//! sequence lives in a JetStream KV bucket (`XF_SEQ_N`), advanced by compare-and-set a block
//! of ids at a time, so a registration costs no write of its own here (issue 18: one durable
//! write per petition). Each process hands out its block in order; a crash or a restart
//! leaves the rest of its block as a gap, never a duplicate, and several instances take
//! disjoint blocks. The append itself also refuses an id that already has events.

use async_nats::jetstream::{self, kv};
use chrono::NaiveDate;
use tokio::sync::Mutex;
use xinfang_shared::ids::{CaseId, NodeCode};

/// Ids reserved per compare-and-set: at most this many numbers are skipped by a restart.
pub const BLOCK: u32 = 20;

/// The highest sequence number of a day (ids have six digits).
const LAST_OF_DAY: u32 = 999_999;

/// The block a process is handing out: `next..=end` of day `day`, and the bucket's revision
/// after reserving it.
struct Block {
    day: String,
    next: u32,
    end: u32,
    revision: u64,
}

/// Allocates `<node>-<yyyymmdd>-<seq>` ids.
pub struct CaseIds {
    node: NodeCode,
    kv: kv::Store,
    block: Mutex<Option<Block>>,
}

impl CaseIds {
    /// Opens (creating if needed) the node's sequence bucket, kept on `replicas` servers.
    pub async fn open(js: &jetstream::Context, node: NodeCode, replicas: usize) -> Result<Self, String> {
        let kv = js
            .create_or_update_key_value(kv::Config {
                num_replicas: replicas,
                bucket: format!("XF_SEQ_{node}"),
                description: "per-day case id sequences: the highest number reserved".into(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("case id bucket: {e}"))?;
        Ok(Self { node, kv, block: Mutex::new(None) })
    }

    /// The next id for `day` (the local registration date).
    pub async fn next(&self, day: NaiveDate) -> Result<CaseId, String> {
        let key = day.format("%Y%m%d").to_string();
        let mut block = self.block.lock().await;
        let fresh = match block.as_mut() {
            Some(b) if b.day == key && b.next <= b.end => None,
            Some(b) if b.day == key => Some(Some((b.end, b.revision))),
            _ => Some(None),
        };
        if let Some(known) = fresh {
            *block = Some(self.reserve(&key, known).await?);
        }
        let b = block.as_mut().expect("a block is reserved");
        let seq = b.next;
        b.next += 1;
        Ok(CaseId::new(&self.node, day, seq))
    }

    /// Reserves the next block of `day`, starting from the bucket's value as last seen
    /// (`known`: value and revision) when there is one.
    async fn reserve(&self, day: &str, mut known: Option<(u32, u64)>) -> Result<Block, String> {
        for _ in 0..50 {
            let (reserved, revision) = match known {
                Some(k) => k,
                None => match self.kv.entry(day).await.map_err(|e| e.to_string())? {
                    Some(entry) if entry.operation == kv::Operation::Put => {
                        let value = std::str::from_utf8(&entry.value)
                            .ok()
                            .and_then(|s| s.parse::<u32>().ok())
                            .ok_or_else(|| format!("case id bucket: key {day} holds no number"))?;
                        (value, entry.revision)
                    }
                    _ => (0, 0),
                },
            };
            if reserved >= LAST_OF_DAY {
                return Err("more than 999999 cases in one day".into());
            }
            let end = (reserved + BLOCK).min(LAST_OF_DAY);
            let written = if revision == 0 {
                self.kv.create(day, end.to_string().into()).await.map_err(|e| e.to_string())
            } else {
                self.kv.update(day, end.to_string().into(), revision).await.map_err(|e| e.to_string())
            };
            match written {
                Ok(revision) => return Ok(Block { day: day.to_string(), next: reserved + 1, end, revision }),
                Err(e) => {
                    tracing::debug!(error = %e, "case id sequence moved (another instance); reloading");
                    known = None;
                }
            }
        }
        Err("case id sequence is contended; try again".into())
    }
}
