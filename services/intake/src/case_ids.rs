//! Case id allocation that survives restarts and several intake instances: the per-day
//! sequence lives in a JetStream KV bucket (`XF_SEQ_N`), advanced by compare-and-set a block
//! of ids at a time, so a registration costs no write of its own here (issue 18: one durable
//! write per petition). Each process hands out its block in order and reserves the next one in
//! the background once half of it is out, so no registration waits for the reservation's
//! fsync (before, every 20th waited, and every registration queued behind it: the submit p99
//! at half load). A crash or a restart leaves the rest of its block and the one reserved ahead
//! as a gap, never a duplicate, and several instances take disjoint blocks. The append itself
//! also refuses an id that already has events.

use async_nats::jetstream::{self, kv};
use chrono::NaiveDate;
use tokio::sync::Mutex;
use xinfang_shared::ids::{CaseId, NodeCode};

/// Ids reserved per compare-and-set: a restart skips at most twice this many numbers (the rest
/// of the block and the one reserved ahead).
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

/// The blocks a process holds: the one it is handing out, and the next, being reserved in the
/// background or reserved.
#[derive(Default)]
struct Blocks {
    current: Option<Block>,
    ahead: Option<tokio::task::JoinHandle<Result<Block, String>>>,
}

/// Allocates `<node>-<yyyymmdd>-<seq>` ids.
pub struct CaseIds {
    node: NodeCode,
    kv: kv::Store,
    blocks: Mutex<Blocks>,
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
        Ok(Self { node, kv, blocks: Mutex::new(Blocks::default()) })
    }

    /// The next id for `day` (the local registration date).
    pub async fn next(&self, day: NaiveDate) -> Result<CaseId, String> {
        let key = day.format("%Y%m%d").to_string();
        let mut blocks = self.blocks.lock().await;
        let usable = blocks.current.as_ref().is_some_and(|b| b.day == key && b.next <= b.end);
        if !usable {
            let ahead = match blocks.ahead.take() {
                Some(task) => task.await.map_err(|e| e.to_string()).and_then(|r| r).ok(),
                None => None,
            };
            blocks.current = Some(match ahead.filter(|b| b.day == key) {
                Some(b) => b,
                // none ahead, or for another day, or its reservation failed: reserve now
                None => {
                    let known = blocks.current.as_ref().filter(|b| b.day == key).map(|b| (b.end, b.revision));
                    reserve(self.kv.clone(), key.clone(), known).await?
                }
            });
        }
        let b = blocks.current.as_mut().expect("a block is reserved");
        let seq = b.next;
        b.next += 1;
        // half out: the next block is reserved meanwhile, after this one
        if blocks.ahead.is_none() {
            let b = blocks.current.as_ref().expect("a block is reserved");
            if b.end.saturating_sub(b.next) < BLOCK / 2 {
                let known = Some((b.end, b.revision));
                blocks.ahead = Some(tokio::spawn(reserve(self.kv.clone(), key, known)));
            }
        }
        Ok(CaseId::new(&self.node, day, seq))
    }
}

/// Reserves the next block of `day`, starting from the bucket's value as last seen (`known`:
/// value and revision) when there is one.
async fn reserve(kv: kv::Store, day: String, mut known: Option<(u32, u64)>) -> Result<Block, String> {
    let day = day.as_str();
    for _ in 0..50 {
        let (reserved, revision) = match known {
            Some(k) => k,
            None => match kv.entry(day).await.map_err(|e| e.to_string())? {
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
            kv.create(day, end.to_string().into()).await.map_err(|e| e.to_string())
        } else {
            kv.update(day, end.to_string().into(), revision).await.map_err(|e| e.to_string())
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
