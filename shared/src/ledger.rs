//! The ledger client: provisions the node's streams, appends events with `Nats-Msg-Id` and
//! the per-case optimistic-concurrency headers, and reads a case's history.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, Context};
use async_nats::HeaderMap;
use futures::StreamExt;

use crate::event::Envelope;
use crate::fast_ingest::{FastBatch, FastError};
use crate::ids::{CaseId, NodeCode};
use crate::subjects;

/// How long the case stream remembers message ids to drop duplicates (≥ 10 min, DESIGN.md §3).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(60 * 60);

/// The environment variable that shortens the streams' duplicate window, in seconds: for fault
/// campaigns, so that whatever relies on the window instead of recognising its own outputs
/// shows up as a duplicate within minutes instead of after an hour.
pub const DUPLICATE_WINDOW_ENV: &str = "XF_DUPLICATE_WINDOW_SECS";

/// The duplicate window the streams are provisioned with: [`DUPLICATE_WINDOW`], unless
/// [`DUPLICATE_WINDOW_ENV`] names another (at least 10 s).
pub fn duplicate_window() -> Duration {
    static WINDOW: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *WINDOW.get_or_init(|| {
        std::env::var(DUPLICATE_WINDOW_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DUPLICATE_WINDOW, |secs| Duration::from_secs(secs.max(10)))
    })
}

/// What an append expects of the case's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No condition (events caused by other events; the message id makes them idempotent).
    Any,
    /// The case has no event yet (a new case id is really new).
    NewCase,
    /// The case's latest event is at this stream sequence (the writer saw the whole history).
    LastSeq(u64),
}

/// Why an append did not land.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer got there first: reload and retry.
    #[error("the case changed since it was read")]
    Conflict,
    /// JetStream did not confirm the write; it may or may not be stored.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[error("ledger read failed: {0}")]
pub struct ReadError(pub String);

/// One stored event with its stream sequence.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub event: Envelope,
}

/// Appends of [`Ledger::append_many`] in flight at once when the server cannot batch.
pub const APPEND_WINDOW: usize = 1024;

/// How often the server acknowledges a fast-ingest batch (messages).
const FAST_FLOW: u16 = 500;

/// Some of a run of appends did not land.
#[derive(Debug, thiserror::Error)]
#[error("{stored} stored, then: {error}")]
pub struct Partial {
    /// How many events, from the first, are in the ledger.
    pub stored: usize,
    pub error: AppendError,
}

/// An event ready for the wire: its subject, headers and bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: bytes::Bytes,
}

/// A node's case ledger (`XF_CASES_N`).
#[derive(Clone)]
pub struct Ledger {
    js: Context,
    node: NodeCode,
    stream: String,
    batched: bool,
    /// Whether a case's history is read with direct gets: the stream allows them and has one
    /// replica, so the server that answers has every acknowledged write (a follower of a
    /// replicated stream may answer a direct get before it has the latest).
    direct: bool,
}

impl Ledger {
    /// Opens the ledger, creating the node's case and outbox streams where they are missing
    /// (with one replica) and updating them to this configuration, their replicas as they are.
    pub async fn open(js: Context, node: NodeCode) -> Result<Self, ReadError> {
        Self::open_replicated(js, node, 0).await
    }

    /// [`Ledger::open`], the streams kept on `replicas` servers (`nats.replicas`; 0: as they
    /// are).
    pub async fn open_replicated(js: Context, node: NodeCode, replicas: usize) -> Result<Self, ReadError> {
        let config = provision(&js, &node, replicas).await?;
        let direct = config.allow_direct && config.num_replicas <= 1;
        Ok(Self { stream: subjects::case_stream(&node), js, node, batched: config.allow_batch_publish, direct })
    }

    /// Whether the case stream takes fast-ingest batches (nats-server ≥ 2.14).
    pub fn batched(&self) -> bool {
        self.batched
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &Context {
        &self.js
    }

    /// The node this ledger belongs to.
    pub fn node(&self) -> &NodeCode {
        &self.node
    }

    /// The case stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// Appends an event and waits until JetStream has stored it; returns its stream sequence.
    /// A duplicate (same event id inside the window) returns the original's sequence.
    #[tracing::instrument(skip(self, event), fields(case = %event.case_id, kind = %event.kind))]
    pub async fn append(&self, event: &Envelope, expect: Expect) -> Result<u64, AppendError> {
        let mut outgoing = self.outgoing(event);
        let last = match expect {
            Expect::Any => None,
            Expect::NewCase => Some(0),
            Expect::LastSeq(seq) => Some(seq),
        };
        if let Some(seq) = last {
            outgoing.headers.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string().as_str());
            outgoing.headers.insert(
                "Nats-Expected-Last-Subject-Sequence-Subject",
                subjects::case_filter(&self.node, &event.case_id).as_str(),
            );
        }
        self.publish(outgoing).await
    }

    /// Appends `events` in order, with no per-case condition (each is made idempotent by its
    /// id), as one fast-ingest batch when the server takes them, else [`APPEND_WINDOW`]
    /// acknowledged appends at a time. Returns how many were appended; on failure, how many
    /// from the first are certainly in the ledger (later ones may be too).
    pub async fn append_many(&self, events: impl IntoIterator<Item = Envelope>) -> Result<usize, Partial> {
        self.append_rendered(events.into_iter().map(|e| self.outgoing(&e))).await
    }

    /// [`Self::append_many`] for events already rendered ([`Self::outgoing`]).
    pub async fn append_rendered(&self, events: impl IntoIterator<Item = Outgoing>) -> Result<usize, Partial> {
        self.append_rendered_with(events, |_| {}).await
    }

    /// [`Self::append_rendered`], telling `stored` each time more of the run, counted from
    /// its first event, is confirmed in the ledger (with a fast-ingest batch, every flow
    /// acknowledgement: about every 500 events).
    pub async fn append_rendered_with(
        &self,
        events: impl IntoIterator<Item = Outgoing>,
        stored: impl FnMut(usize),
    ) -> Result<usize, Partial> {
        if self.batched {
            self.append_batch(events, stored).await
        } else {
            self.append_window(events, stored).await
        }
    }

    /// [`Self::append_many`] without batches: [`APPEND_WINDOW`] acknowledged appends at a time.
    pub async fn append_each(&self, events: impl IntoIterator<Item = Envelope>) -> Result<usize, Partial> {
        self.append_window(events.into_iter().map(|e| self.outgoing(&e)), |_| {}).await
    }

    async fn append_window(
        &self,
        events: impl IntoIterator<Item = Outgoing>,
        mut stored: impl FnMut(usize),
    ) -> Result<usize, Partial> {
        let mut window = futures::stream::FuturesUnordered::new();
        let mut done: Vec<bool> = Vec::new();
        let mut prefix = 0;
        let mut error = None;
        // records one append's outcome and reports the confirmed prefix when it grows
        let mut settle = |(i, r): (usize, Result<u64, AppendError>), done: &mut Vec<bool>| {
            match r {
                Ok(_) => done[i] = true,
                Err(e) => error = Some(e),
            }
            let before = prefix;
            while done.get(prefix) == Some(&true) {
                prefix += 1;
            }
            if prefix > before {
                stored(prefix);
            }
        };
        for (i, event) in events.into_iter().enumerate() {
            done.push(false);
            if window.len() >= APPEND_WINDOW {
                if let Some(r) = window.next().await {
                    settle(r, &mut done);
                }
            }
            window.push(async move { (i, self.publish(event).await) });
        }
        while let Some(r) = window.next().await {
            settle(r, &mut done);
        }
        match error {
            None => Ok(done.len()),
            Some(error) => Err(Partial { stored: done.iter().take_while(|d| **d).count(), error }),
        }
    }

    async fn append_batch(
        &self,
        events: impl IntoIterator<Item = Outgoing>,
        mut stored: impl FnMut(usize),
    ) -> Result<usize, Partial> {
        let failed = |stored: u64, e: FastError| Partial {
            stored: stored as usize,
            error: AppendError::Unavailable(e.to_string()),
        };
        let mut batch =
            FastBatch::open(&self.js.client(), FAST_FLOW, Duration::from_secs(10)).await.map_err(|e| failed(0, e))?;
        let mut reported = 0;
        for event in events {
            if let Err(e) = batch.add(event.subject.into(), event.headers, event.payload).await {
                return Err(failed(batch.stored(), e));
            }
            if batch.stored() > reported {
                reported = batch.stored();
                stored(reported as usize);
            }
        }
        let confirmed = batch.stored();
        let n = batch.finish().await.map_err(|e| failed(confirmed, e))?;
        if n > reported {
            stored(n as usize);
        }
        Ok(n as usize)
    }

    /// An event rendered for the wire: its subject, and its message id, type and trace
    /// context as headers.
    pub fn outgoing(&self, event: &Envelope) -> Outgoing {
        self.outgoing_raw(&event.case_id, &event.kind, &event.event_id, event.to_bytes())
    }

    /// [`Self::outgoing`] for an event whose bytes are already made (they must be the wire
    /// form of an [`Envelope`] with this case, type and id).
    pub fn outgoing_raw(&self, case: &CaseId, kind: &str, event_id: &str, payload: bytes::Bytes) -> Outgoing {
        Outgoing { subject: subjects::case_event(&self.node, case, kind), headers: headers(event_id, kind), payload }
    }

    /// Publishes one rendered event and waits until JetStream has stored it; returns its
    /// stream sequence (the original's for a duplicate).
    async fn publish(&self, event: Outgoing) -> Result<u64, AppendError> {
        publish_acked(&self.js, event).await
    }

    /// Writes a cross-node message to this node's outbox (`xf.<me>.out.<to>.<kind>`), with the
    /// envelope's id as message id; delivery to `to` is JetStream sourcing (DESIGN.md §6).
    pub async fn send(&self, to: &NodeCode, kind: &str, message: &Envelope) -> Result<(), AppendError> {
        self.js
            .publish_with_headers(
                subjects::outbox(&self.node, to, kind),
                headers(&message.event_id, kind),
                message.to_bytes(),
            )
            .await
            .map_err(|e| AppendError::Unavailable(e.to_string()))?
            .await
            .map_err(|e| AppendError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// Every event of a case, oldest first (empty if the case is unknown here).
    #[tracing::instrument(skip(self))]
    pub async fn history(&self, case: &CaseId) -> Result<Vec<Stored>, ReadError> {
        let filter = subjects::case_filter(&self.node, case);
        if self.direct {
            read_direct(&self.js, &self.stream, &filter).await
        } else {
            self.read_filtered(filter).await
        }
    }

    /// The latest event of each type in a case, oldest first: one batched direct get
    /// (`multi_last`, ADR-31) that the server answers from its subject index, where a whole
    /// history read scans the stream between the case's events (issue 18: that scan, for the
    /// original case of each repeat petition, was what held routing's p99 at 0.4 s). Folded
    /// ([`crate::state::CaseState::fold`]) it gives the case's stage and organ as its whole
    /// history does — every event sets them outright, so the last of each type decides — but
    /// not what is counted (declines). A replicated stream is read through a consumer.
    pub async fn latest_of_each_type(&self, case: &CaseId) -> Result<Vec<Stored>, ReadError> {
        if !self.direct {
            return self.history(case).await;
        }
        let filter = subjects::case_filter(&self.node, case);
        let request = serde_json::json!({ "multi_last": [filter], "batch": DIRECT_BATCH });
        let mut out = Vec::new();
        direct_batch(&self.js, &self.stream, request, |msg| push_stored(msg, &mut out).map(|_| ())).await?;
        out.sort_by_key(|s| s.seq);
        Ok(out)
    }

    /// Every event of a case, oldest first, without their stream sequences.
    pub async fn events(&self, case: &CaseId) -> Result<Vec<Envelope>, ReadError> {
        Ok(self.history(case).await?.into_iter().map(|s| s.event).collect())
    }

    /// Every stored message under `filter`, oldest first, as events.
    pub async fn read_filtered(&self, filter: String) -> Result<Vec<Stored>, ReadError> {
        read_stream(&self.js, &self.stream, filter).await
    }

    /// Whether the case already has an event of type `kind` in this ledger.
    pub async fn has(&self, case: &CaseId, kind: &str) -> Result<bool, ReadError> {
        let stream = self.js.get_stream_no_info(&self.stream).await.map_err(|e| ReadError(e.to_string()))?;
        match stream.get_last_raw_message_by_subject(&subjects::case_event(&self.node, case, kind)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(ReadError(e.to_string())),
        }
    }
}

/// Publishes one message and waits until JetStream has stored it; its stream sequence (the
/// original's for a duplicate id), [`AppendError::Conflict`] when an expected-last-sequence
/// header does not hold.
pub async fn publish_acked(js: &Context, message: Outgoing) -> Result<u64, AppendError> {
    let ack = js
        .publish_with_headers(message.subject, message.headers, message.payload)
        .await
        .map_err(|e| AppendError::Unavailable(e.to_string()))?
        .await
        .map_err(|e| match e.kind() {
            jetstream::context::PublishErrorKind::WrongLastSequence => AppendError::Conflict,
            _ => AppendError::Unavailable(e.to_string()),
        })?;
    Ok(ack.sequence)
}

/// Every stored message of stream `name` under `filter` (empty: all), oldest first, as events
/// (the ledger, an outbox, an inbox).
pub async fn read_stream(js: &Context, name: &str, filter: String) -> Result<Vec<Stored>, ReadError> {
    let mut out = Vec::new();
    scan_stream(js, name, filter, |seq, _, payload| {
        match Envelope::from_slice(payload) {
            Ok(event) => out.push(Stored { seq, event }),
            Err(e) => tracing::warn!(seq, error = %e, "skipping an unreadable ledger entry"),
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Messages fetched at a time by [`scan_stream`].
const SCAN_FETCH: usize = 4096;

/// Hands every message of stream `name` under `filter` (empty: all) that is stored when the
/// scan begins to `each` (its stream sequence and bytes), oldest first, through one ephemeral
/// consumer, without holding them: a sequential read of a whole ledger in bounded memory.
/// Returns the sequence of the last message handed over (0: none).
pub async fn scan_stream<F>(js: &Context, name: &str, filter: String, mut each: F) -> Result<u64, ReadError>
where
    F: FnMut(u64, &str, &[u8]) -> Result<(), String>,
{
    let err = |e: &dyn std::fmt::Display| ReadError(e.to_string());
    let stream = js.get_stream_no_info(name).await.map_err(|e| err(&e))?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            replay_policy: consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| err(&e))?;
    let total = consumer.cached_info().num_pending as usize;
    let name = consumer.cached_info().name.clone();
    let (mut seen, mut last) = (0, 0);
    while seen < total {
        let mut batch = consumer
            .fetch()
            .max_messages((total - seen).min(SCAN_FETCH))
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|e| err(&e))?;
        let before = seen;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| err(&e))?;
            last = msg.info().map_err(|e| err(&e))?.stream_sequence;
            seen += 1;
            each(last, msg.subject.as_str(), &msg.payload).map_err(ReadError)?;
        }
        if seen == before {
            return Err(ReadError("the stream stopped delivering during a read".into()));
        }
    }
    let _ = stream.delete_consumer(&name).await;
    Ok(last)
}

/// Messages asked for per direct-get request of [`read_direct`].
const DIRECT_BATCH: usize = 1024;

/// How long [`read_direct`] waits for the server's next answer.
const DIRECT_WAIT: Duration = Duration::from_secs(5);

/// Every stored message of stream `name` under `filter`, oldest first, as events, read with
/// batched direct gets (`$JS.API.DIRECT.GET.<stream>` with `next_by_subj`, ADR-31): no
/// consumer is made. The server ends each batch with a `204` carrying how many matching
/// messages remain, and answers `404` when none match.
///
/// The first request asks for one message, the next ones for exactly as many as remain: a
/// batch larger than what matches makes the server look for more to the end of the stream,
/// and that search, not the messages, was the whole cost of a read (issue 18:
/// `tests/examples/direct_probe.rs` measured 980 reads/s of two-event cases in a 12,000-message
/// stream with a batch of 1024, 36,000/s with a batch of 1).
pub async fn read_direct(js: &Context, name: &str, filter: &str) -> Result<Vec<Stored>, ReadError> {
    let mut out = Vec::new();
    let mut from = 1u64;
    let mut ask = 1;
    loop {
        let request = serde_json::json!({ "seq": from, "next_by_subj": filter, "batch": ask });
        let remaining = direct_batch(js, name, request, |msg| {
            from = push_stored(msg, &mut out)? + 1;
            Ok(())
        })
        .await?;
        if remaining == 0 {
            return Ok(out);
        }
        ask = remaining.min(DIRECT_BATCH as u64) as usize;
    }
}

/// The last stored message of each subject under `filter` in stream `name` (subject, bytes),
/// read with one batched direct get (`multi_last`, ADR-31; nats-server ≥ 2.11): the latest
/// state each sender reported, without a consumer or a projection.
pub async fn last_by_subject(js: &Context, name: &str, filter: &str) -> Result<Vec<(String, bytes::Bytes)>, ReadError> {
    let mut out = Vec::new();
    let request = serde_json::json!({ "multi_last": [filter], "batch": DIRECT_BATCH });
    direct_batch(js, name, request, |msg| {
        let subject = msg.headers.as_ref().and_then(|h| h.get("Nats-Subject")).map(|v| v.as_str().to_string());
        let subject = subject.ok_or_else(|| ReadError("a direct get answer without its subject".into()))?;
        out.push((subject, msg.payload.clone()));
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Adds a direct get's answer to `out` as a stored event (an unreadable one is skipped with a
/// warning); returns its stream sequence.
fn push_stored(msg: &async_nats::Message, out: &mut Vec<Stored>) -> Result<u64, ReadError> {
    let Some(seq) = header_u64(msg, "Nats-Sequence") else {
        return Err(ReadError("a direct get answer without its sequence".into()));
    };
    match Envelope::from_slice(&msg.payload) {
        Ok(event) => out.push(Stored { seq, event }),
        Err(e) => tracing::warn!(seq, error = %e, "skipping an unreadable ledger entry"),
    }
    Ok(seq)
}

fn header_u64(msg: &async_nats::Message, name: &str) -> Option<u64> {
    msg.headers.as_ref().and_then(|h| h.get(name)).and_then(|v| v.as_str().parse::<u64>().ok())
}

/// Sends one batched direct get (`$JS.API.DIRECT.GET.<stream>`, ADR-31) and hands each
/// message answered to `each`; returns how many matching messages remain after the batch (the
/// server ends it with a `204` telling so, or answers `404` when none match).
async fn direct_batch(
    js: &Context,
    name: &str,
    request: serde_json::Value,
    mut each: impl FnMut(&async_nats::Message) -> Result<(), ReadError>,
) -> Result<u64, ReadError> {
    let client = js.client();
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.map_err(|e| ReadError(e.to_string()))?;
    client
        .publish_with_reply(format!("$JS.API.DIRECT.GET.{name}"), inbox, request.to_string().into())
        .await
        .map_err(|e| ReadError(e.to_string()))?;
    let remaining = loop {
        let msg = match tokio::time::timeout(DIRECT_WAIT, answers.next()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(ReadError(format!("the connection closed during a read of {name}"))),
            Err(_) => return Err(ReadError(format!("{name} did not answer a read"))),
        };
        match msg.status.map(|s| s.as_u16()) {
            None => each(&msg)?,
            Some(204) => break header_u64(&msg, "Nats-Num-Pending").unwrap_or(0),
            Some(404) => break 0,
            Some(code) => {
                let why = msg.description.clone().unwrap_or_default();
                return Err(ReadError(format!("direct get answered {code} {why}")));
            }
        }
    };
    let _ = answers.unsubscribe().await;
    Ok(remaining)
}

/// The headers of every ledger and outbox message: the id JetStream deduplicates by, the
/// type, and the trace context derived from the id.
pub fn headers(event_id: &str, kind: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", event_id);
    headers.insert("Xf-Type", kind);
    headers.insert("traceparent", traceparent(event_id).as_str());
    headers
}

/// A W3C `traceparent` derived from the event id, so one trace follows a case's event.
fn traceparent(event_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(event_id.as_bytes());
    format!("00-{}-{}-01", hex::encode(&h[..16]), hex::encode(&h[16..24]))
}

/// Creates or updates the node's case and outbox streams (idempotent; safe at every start).
/// Returns the case stream's configuration as the server keeps it: whether it takes fast-ingest
/// batches (it asks for them, and a server older than 2.14, which does not know the setting,
/// gets the stream without) and how many replicas it has (`replicas`; 0: as it has).
pub async fn provision(js: &Context, node: &NodeCode, replicas: usize) -> Result<stream::Config, ReadError> {
    let cases = stream::Config {
        num_replicas: replicas,
        name: subjects::case_stream(node),
        description: Some(format!("xinfang case ledger of node {node}")),
        subjects: vec![subjects::case_events(node)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: duplicate_window(),
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    };
    let outbox = stream::Config {
        num_replicas: replicas,
        name: subjects::outbox_stream(node),
        description: Some(format!("messages node {node} owes other nodes")),
        subjects: vec![subjects::outbox_subjects(node)],
        storage: stream::StorageType::File,
        duplicate_window: duplicate_window(),
        allow_direct: true,
        ..Default::default()
    };
    let info = match ensure_stream(js, stream::Config { allow_batch_publish: true, ..cases.clone() }).await {
        Ok(info) => info,
        Err(e) if e.0.contains("allow_batched") => ensure_stream(js, cases).await?,
        Err(e) => return Err(e),
    };
    ensure_stream(js, outbox).await?;
    Ok(info.config)
}

/// How long a query code is kept for the receipt notice (KV `XF_CODES_N`).
pub const QUERY_CODE_DAYS: u64 = 30;

/// Opens (creating if needed) KV `XF_CODES_N`: case id → its query code, written by intake
/// before the case is registered and read by notification for the petitioner's receipt. The
/// ledger only ever holds the code's hash; this bucket forgets a code after
/// [`QUERY_CODE_DAYS`].
pub async fn query_code_bucket(
    js: &Context,
    node: &NodeCode,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store, ReadError> {
    js.create_or_update_key_value(async_nats::jetstream::kv::Config {
        num_replicas: replicas,
        bucket: format!("XF_CODES_{node}"),
        description: "query codes for the receipt notice".into(),
        history: 1,
        max_age: std::time::Duration::from_secs(QUERY_CODE_DAYS * 86_400),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| ReadError(format!("query code bucket: {e}")))
}

/// How long provisioning waits out a JetStream that cannot place a stream yet: a cluster
/// still forming (no meta leader, or not every server known), or a server just restarted.
const NOT_READY_PATIENCE: Duration = Duration::from_secs(60);

/// Creates a stream, or updates it when it exists with another configuration. `num_replicas`
/// 0 keeps an existing stream's replicas (a server takes 0 as 1, which would scale a
/// replicated stream down) and gives a new one a single replica. Waits, up to a minute, while
/// JetStream is not ready to place it.
pub async fn ensure_stream(js: &Context, config: stream::Config) -> Result<stream::Info, ReadError> {
    let failed = |e: &dyn std::fmt::Display| ReadError(format!("stream {}: {e}", config.name));
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let mut wanted = config.clone();
        let mut ready = true;
        if config.num_replicas == 0 {
            use jetstream::context::GetStreamErrorKind;
            match js.get_stream(&config.name).await {
                Ok(existing) => wanted.num_replicas = existing.cached_info().config.num_replicas,
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(err)
                        if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND => {}
                    GetStreamErrorKind::Request | GetStreamErrorKind::JetStream(_) => ready = false,
                    _ => return Err(failed(&e)),
                },
            }
        }
        if ready {
            match js.create_or_update_stream(wanted).await {
                Ok(info) => return Ok(info),
                Err(e) if not_ready(&e) && started.elapsed() < NOT_READY_PATIENCE => {}
                Err(e) => return Err(failed(&e)),
            }
        } else if started.elapsed() >= NOT_READY_PATIENCE {
            return Err(failed(&"JetStream did not answer"));
        }
        tracing::info!(stream = %config.name, "JetStream not ready to place the stream; waiting");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Whether a stream could not be created or updated only because JetStream is not ready yet.
fn not_ready(e: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as Kind;
    use jetstream::ErrorCode;
    match e.kind() {
        Kind::JetStreamUnavailable | Kind::TimedOut => true,
        Kind::JetStream(err) => {
            matches!(err.error_code(), ErrorCode::CLUSTER_NO_PEERS | ErrorCode::CLUSTER_NOT_AVAILABLE)
        }
        _ => false,
    }
}
