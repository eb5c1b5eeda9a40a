//! Case id allocation that survives restarts and several intake instances: the per-day
//! sequence lives in a JetStream KV bucket (`XF_SEQ_N`), advanced by compare-and-set.
//! A crash after allocating and before appending leaves a gap, never a duplicate; the
//! append itself also refuses an id that already has events.

use async_nats::jetstream::{self, kv};
use chrono::NaiveDate;
use tokio::sync::Mutex;
use xinfang_shared::ids::{CaseId, NodeCode};

/// Allocates `<node>-<yyyymmdd>-<seq>` ids.
pub struct CaseIds {
    node: NodeCode,
    kv: kv::Store,
    /// Last known (day key, value, revision), so the usual allocation is one round trip.
    cache: Mutex<Option<(String, u32, u64)>>,
}

impl CaseIds {
    /// Opens (creating if needed) the node's sequence bucket, kept on `replicas` servers.
    pub async fn open(js: &jetstream::Context, node: NodeCode, replicas: usize) -> Result<Self, String> {
        let kv = js
            .create_or_update_key_value(kv::Config {
                num_replicas: replicas,
                bucket: format!("XF_SEQ_{node}"),
                description: "per-day case id sequences".into(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("case id bucket: {e}"))?;
        Ok(Self { node, kv, cache: Mutex::new(None) })
    }

    /// The next id for `day` (the local registration date).
    pub async fn next(&self, day: NaiveDate) -> Result<CaseId, String> {
        let key = day.format("%Y%m%d").to_string();
        let mut cache = self.cache.lock().await;
        for _ in 0..50 {
            let known = match cache.as_ref() {
                Some((k, v, rev)) if *k == key => Some((*v, *rev)),
                _ => None,
            };
            let result = match known {
                Some((value, rev)) => self
                    .kv
                    .update(&key, (value + 1).to_string().into(), rev)
                    .await
                    .map(|r| (value + 1, r))
                    .map_err(|e| e.to_string()),
                None => match self.kv.entry(&key).await.map_err(|e| e.to_string())? {
                    Some(entry) if entry.operation == kv::Operation::Put => {
                        let value = std::str::from_utf8(&entry.value)
                            .ok()
                            .and_then(|s| s.parse::<u32>().ok())
                            .ok_or_else(|| format!("case id bucket: key {key} holds no number"))?;
                        *cache = Some((key.clone(), value, entry.revision));
                        continue;
                    }
                    _ => self.kv.create(&key, "1".into()).await.map(|r| (1, r)).map_err(|e| e.to_string()),
                },
            };
            match result {
                Ok((value, rev)) => {
                    *cache = Some((key, value, rev));
                    if value > 999_999 {
                        return Err("more than 999999 cases in one day".into());
                    }
                    return Ok(CaseId::new(&self.node, day, value));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "case id sequence moved; reloading");
                    *cache = None;
                }
            }
        }
        Err("case id sequence is contended; try again".into())
    }
}
