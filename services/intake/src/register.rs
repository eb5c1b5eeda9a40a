//! Registering a petition (登记, Arts. 21–22): validate, allocate the case id (from a block
//! reserved ahead) and query code, append `registered` — the one durable write, with the
//! code sealed inside it for the receipt notice — and only then hand out the receipt. With an idempotency key the
//! first receipt is kept (KV `XF_IDEM_N`, with a time-to-live) and every retry gets it back.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xinfang_shared::access::{self, Caller};
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::event::{Actor, Envelope, EventData, Registered, RegisteredDue};
use xinfang_shared::ids::CaseId;
use xinfang_shared::keyring::{KeyRing, Purpose};
use xinfang_shared::ledger::{AppendError, Expect};
use xinfang_shared::petition::{self, Channel, Submission};
use xinfang_shared::time::rfc3339;

use crate::Intake;

/// Query codes use letters and digits that cannot be mistaken for each other (no 0/O, 1/I/L).
const QUERY_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// The receipt a petitioner gets (DESIGN.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub ok: bool,
    pub case_id: CaseId,
    pub query_code: String,
    pub registered_at: String,
    pub due: serde_json::Value,
    pub repeat_of: Option<CaseId>,
}

/// What the idempotency bucket keeps per key: the receipt and the event it stands for.
#[derive(Serialize, Deserialize)]
struct Remembered {
    receipt: Receipt,
    event: Envelope,
}

/// The outcome of a submission.
pub struct Submitted {
    pub receipt: Receipt,
    /// A retry with a known idempotency key: the first receipt, nothing new registered.
    pub replayed: bool,
    pub channel: Channel,
}

/// The keyed hash of `case_id:code` — what events store instead of the query code.
pub fn query_code_hash(keys: &KeyRing, case: &CaseId, code: &str) -> String {
    keys.hash(Purpose::QueryCode, &format!("{case}:{code}"))
}

/// Does `stored` (a case's `query_code_hash`, keyed or from before) hash `code`?
pub fn query_code_matches(keys: &KeyRing, case: &CaseId, code: &str, stored: &str) -> bool {
    let message = format!("{case}:{code}");
    keys.verify(Purpose::QueryCode, &message, &message, stored)
}

fn new_query_code() -> String {
    let mut rng = rand::rng();
    (0..6).map(|_| QUERY_ALPHABET[rng.random_range(0..QUERY_ALPHABET.len())] as char).collect()
}

/// Opens (creating if needed) the idempotency bucket.
pub async fn idempotency_bucket(
    js: &jetstream::Context,
    node: &str,
    hours: u64,
    replicas: usize,
) -> Result<kv::Store, String> {
    js.create_or_update_key_value(kv::Config {
        num_replicas: replicas,
        bucket: format!("XF_IDEM_{node}"),
        description: "idempotency keys of submitted petitions → first receipt".into(),
        history: 1,
        max_age: Duration::from_secs(hours.max(1) * 3600),
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("idempotency bucket: {e}"))
}

impl Intake {
    /// Validates and registers a petition body from `caller` (DESIGN.md §11: the public
    /// online only, `integration` on its channel, `bureau` on any).
    pub async fn submit(&self, caller: &Caller, body: &[u8]) -> Result<Submitted, ApiError> {
        let value = petition::parse_body(body)?;
        self.submit_value(caller, &value, |channel| access::may_submit(caller, channel)).await
    }

    /// [`Self::submit`] of a parsed body, the caller's right to its channel checked by `may`
    /// (a booking at a leader's reception lets the public register on that channel).
    pub(crate) async fn submit_value(
        &self,
        caller: &Caller,
        value: &serde_json::Value,
        may: impl FnOnce(Channel) -> Result<(), ApiError>,
    ) -> Result<Submitted, ApiError> {
        let now = self.clock.now();
        let submission = petition::validate(value, &self.settings, now)?;
        let channel = submission.petition.channel;
        may(channel)?;
        // the staff who registered it (a clerk, a hotline's integration) is on record
        let by = match caller {
            Caller::Staff(i) => Some(i.as_staff()),
            Caller::Public => None,
        };
        let (receipt, replayed) = match submission.idempotency_key.clone() {
            None => (self.register(submission, now, by.as_ref()).await?, false),
            Some(key) => self.register_once(&key, submission, now, by.as_ref()).await?,
        };
        Ok(Submitted { receipt, replayed, channel })
    }

    async fn register(
        &self,
        submission: Submission,
        now: xinfang_shared::time::Instant,
        by: Option<&Actor>,
    ) -> Result<Receipt, ApiError> {
        for _ in 0..5 {
            let (receipt, event) = self.prepare(&submission, now, by).await?;
            match self.append_retrying(&event, Expect::NewCase).await {
                Ok(()) => return Ok(receipt),
                // the id already has events (a restored sequence, say): take the next one
                Err(AppendError::Conflict) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(ApiError::general(ErrorCode::Unavailable, "could not allocate a free case id"))
    }

    async fn register_once(
        &self,
        key: &str,
        submission: Submission,
        now: xinfang_shared::time::Instant,
        by: Option<&Actor>,
    ) -> Result<(Receipt, bool), ApiError> {
        let slot = hex::encode(Sha256::digest(key.as_bytes()));
        if let Some(first) = self.remembered(&slot).await? {
            return self.replay(first).await;
        }
        let (receipt, event) = self.prepare(&submission, now, by).await?;
        // the query code sealed: no plaintext code at rest in the bucket
        let sealed = Receipt { query_code: self.keys.seal(&receipt.query_code, rand::random()), ..receipt.clone() };
        let record = serde_json::to_vec(&Remembered { receipt: sealed, event: event.clone() }).expect("serializes");
        match self.idempotency.create(&slot, record.into()).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                // a concurrent retry of the same submission won the race
                let first = self.remembered(&slot).await?.ok_or_else(|| unavailable("idempotency record vanished"))?;
                return self.replay(first).await;
            }
            Err(e) => return Err(unavailable(e)),
        }
        match self.append_retrying(&event, Expect::NewCase).await {
            Ok(()) => Ok((receipt, false)),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Whether a submission with idempotency key `key` was already made (a retry).
    pub(crate) async fn submitted_before(&self, key: &str) -> Result<bool, ApiError> {
        Ok(self.remembered(&hex::encode(Sha256::digest(key.as_bytes()))).await?.is_some())
    }

    async fn remembered(&self, slot: &str) -> Result<Option<Remembered>, ApiError> {
        let Some(bytes) = self.idempotency.get(slot).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let mut first: Remembered = serde_json::from_slice(&bytes).map_err(unavailable)?;
        first.receipt.query_code = self.unseal_code(&first.receipt.query_code)?;
        Ok(Some(first))
    }

    /// A query code as kept in a bucket: sealed, or plaintext from before sealing.
    fn unseal_code(&self, kept: &str) -> Result<String, ApiError> {
        if !kept.starts_with("s1.") {
            return Ok(kept.to_string());
        }
        self.keys.open(kept).ok_or_else(|| unavailable("a sealed query code does not open with the node secret"))
    }

    /// The first receipt — after making sure its event is in the ledger (the first attempt
    /// may have died between remembering and appending).
    async fn replay(&self, first: Remembered) -> Result<(Receipt, bool), ApiError> {
        let known = self.ledger.has(&first.event.case_id, "registered").await.map_err(unavailable)?;
        if !known {
            self.append_retrying(&first.event, Expect::Any).await.map_err(unavailable)?;
        }
        Ok((first.receipt, true))
    }

    /// Appends, retrying with the same event id while JetStream does not confirm; the
    /// stream's duplicate window turns a retry of a write that did land into a no-op.
    async fn append_retrying(&self, event: &Envelope, expect: Expect) -> Result<(), AppendError> {
        let mut last = None;
        for attempt in 0..4u32 {
            match self.ledger.append(event, expect).await {
                Ok(_) => return Ok(()),
                Err(AppendError::Conflict) => return Err(AppendError::Conflict),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "append not confirmed; retrying");
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn prepare(
        &self,
        submission: &Submission,
        now: xinfang_shared::time::Instant,
        by: Option<&Actor>,
    ) -> Result<(Receipt, Envelope), ApiError> {
        let p = &submission.petition;
        let case_id = self.case_ids.next(now.date_naive()).await.map_err(unavailable)?;
        let query_code = new_query_code();
        let route_due = self.calendar.get().due(p.received_at, self.policy.route);
        let group = p.is_group();
        let urgent_reasons: Vec<String> = if group { vec!["group_petition".into()] } else { vec![] };
        let ids: Vec<&str> = p.petitioners.iter().filter_map(|x| x.id_number.as_ref()).map(|id| id.as_str()).collect();
        let petitioner_keys: Vec<String> = ids.iter().map(|id| self.keys.hash(Purpose::Petitioner, id)).collect();
        // earlier cases may hold the keys of an older secret, or unkeyed ones from before
        let known_as: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                let legacy = format!("{}:{id}", self.petitioner_key_salt);
                self.keys.candidates(Purpose::Petitioner, id, &legacy)
            })
            .collect();
        let repeat = crate::repeats::find(&self.repeats, &known_as, p);
        let data = Registered {
            petition: p.clone(),
            query_code_hash: query_code_hash(&self.keys, &case_id, &query_code),
            query_code_sealed: Some(self.keys.seal(&query_code, rand::random())),
            repeat_of: repeat.as_ref().map(|r| r.case_id.clone()),
            terminated_matter: repeat.as_ref().is_some_and(|r| r.terminated),
            group,
            urgent: !urgent_reasons.is_empty(),
            urgent_reasons,
            petitioner_keys,
            due: RegisteredDue { route: route_due.at, provisional: route_due.provisional },
        };
        let mut event = Envelope::new(
            ulid::Ulid::new().to_string(),
            case_id.clone(),
            self.ledger.node().clone(),
            now,
            Actor::system("intake"),
            None,
            EventData::Registered(Box::new(data)),
        );
        event.recorded_by = by.cloned();
        let receipt = Receipt {
            ok: true,
            case_id,
            query_code,
            registered_at: rfc3339(now),
            due: serde_json::json!({"route": rfc3339(route_due.at), "provisional": route_due.provisional}),
            repeat_of: repeat.map(|r| r.case_id),
        };
        Ok((receipt, event))
    }
}

/// An `unavailable` (503) error for a failure of the ledger or a bucket.
pub fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "ledger unavailable");
    ApiError::general(ErrorCode::Unavailable, "the case ledger is unavailable; please retry")
}
