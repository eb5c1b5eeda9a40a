//! The consumer loop every service uses: a durable pull consumer, ack only after the
//! handler's outputs are durable, nak with backoff on transient failure, and term plus a
//! logged, counted dead letter for an event that can never be processed.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{consumer, message::AckKind, Context};
use futures::StreamExt;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::event::Envelope;

/// What became of one delivery.
#[derive(Debug)]
pub enum Outcome {
    /// Processed (or nothing to do): ack.
    Done,
    /// A transient failure (the ledger or a peer is down): redeliver after a delay.
    Retry(String),
    /// It can never be processed: term and count a dead letter.
    Reject(String),
}

/// Which consumer to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub stream: String,
    pub durable: String,
    pub filter_subjects: Vec<String>,
    /// Deliveries before a message becomes a dead letter.
    pub max_deliver: i64,
    /// Start after this stream sequence when the consumer is (re)created; also recreates
    /// a consumer that is ahead of it (its projection was lost and must be rebuilt).
    pub resume_after: Option<u64>,
}

/// A delivery handed to the handler.
#[derive(Debug)]
pub struct Delivery {
    pub seq: u64,
    /// How many times it has been delivered (1 the first time).
    pub delivered: i64,
    pub event: Envelope,
}

/// Metrics of one consumer.
#[derive(Clone)]
pub struct ConsumerMetrics {
    processed: IntCounterVec,
    dead_letters: IntCounterVec,
    pending: IntGauge,
}

impl ConsumerMetrics {
    /// Registers `xf_<service>_events_total`, `…_dead_letters_total`, `…_consumer_pending`.
    pub fn register(registry: &Registry, service: &str) -> Self {
        let processed = IntCounterVec::new(
            Opts::new(format!("xf_{service}_events_total"), "Ledger events consumed, by result"),
            &["result"],
        )
        .expect("valid metric");
        let dead_letters = IntCounterVec::new(
            Opts::new(format!("xf_{service}_dead_letters_total"), "Events terminated as dead letters"),
            &["reason"],
        )
        .expect("valid metric");
        let pending = IntGauge::new(
            format!("xf_{service}_consumer_pending"),
            "Messages the consumer has not yet received (consumer lag)",
        )
        .expect("valid metric");
        // every result and reason at zero from the start, so a rate sees the first one
        for result in ["done", "retry", "dead_letter"] {
            processed.with_label_values(&[result]);
        }
        for reason in ["unreadable", "retries_exhausted", "rejected"] {
            dead_letters.with_label_values(&[reason]);
        }
        for m in [
            Box::new(processed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dead_letters.clone()),
            Box::new(pending.clone()),
        ] {
            let _ = registry.register(m);
        }
        Self { processed, dead_letters, pending }
    }
}

/// Backoff before redelivering a failed message: 1 s, 2 s, 4 s … capped at 60 s.
pub fn backoff(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 7) - 1;
    Duration::from_secs((1u64 << exp).min(60))
}

/// Runs `handler` over the consumer's deliveries until `shutdown`; reconnects forever.
pub async fn run<H, F>(js: Context, spec: Spec, metrics: ConsumerMetrics, shutdown: CancellationToken, handler: H)
where
    H: FnMut(Delivery) -> F,
    F: Future<Output = Outcome>,
{
    run_reporting(js, spec, metrics, shutdown, watch::Sender::new(false), handler).await
}

/// Like [`run`], and sets `caught_up` once the consumer has handled everything in its stream
/// (the server reports nothing pending and nothing unacknowledged after a handled delivery, or
/// when it is opened): a projection fed by it is then as complete as the stream, for a
/// service whose readiness means "what I show is whole".
pub async fn run_reporting<H, F>(
    js: Context,
    spec: Spec,
    metrics: ConsumerMetrics,
    shutdown: CancellationToken,
    caught_up: watch::Sender<bool>,
    mut handler: H,
) where
    H: FnMut(Delivery) -> F,
    F: Future<Output = Outcome>,
{
    let mut attempt = 0u32;
    // where a reopened consumer starts: after the last event handled in this process (the
    // projection has applied or skipped everything up to it), else where the spec says
    let mut position = spec.resume_after;
    while !shutdown.is_cancelled() {
        match consume(&js, &spec, &mut position, &metrics, &shutdown, &caught_up, &mut handler).await {
            Ok(()) => return,
            Err(e) => {
                if !pause_after(&spec, &shutdown, &mut attempt, &e).await {
                    return;
                }
            }
        }
    }
}

/// Waits before reopening an interrupted consumer, longer after each attempt; `false` when
/// shut down meanwhile.
async fn pause_after(spec: &Spec, shutdown: &CancellationToken, attempt: &mut u32, error: &str) -> bool {
    *attempt += 1;
    let wait = backoff((*attempt).min(6).into());
    tracing::warn!(consumer = %spec.durable, error, ?wait, "consumer interrupted; retrying");
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

async fn consume<H, F>(
    js: &Context,
    spec: &Spec,
    position: &mut Option<u64>,
    metrics: &ConsumerMetrics,
    shutdown: &CancellationToken,
    caught_up: &watch::Sender<bool>,
    handler: &mut H,
) -> Result<(), String>
where
    H: FnMut(Delivery) -> F,
    F: Future<Output = Outcome>,
{
    let mut consumer = open(js, spec, *position).await?;
    if nothing_left(consumer.cached_info()) {
        caught_up.send_replace(true);
    }
    let mut messages = deliveries(&consumer, 64).await?;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let Some(msg) = next else {
            return Err("message stream ended".into());
        };
        let msg = msg.map_err(|e| e.to_string())?;
        let Received { seq, delivered, pending, event } = receive(&msg, spec, metrics).await?;
        if let Some(event) = event {
            // a transient failure is retried in place, never by a nak that lets later events
            // through first: a projection records the highest sequence it applied and would
            // take the late redelivery for done (found by the fault campaign)
            let Some(outcome) = handle_in_place(&msg, seq, delivered, event, spec, metrics, shutdown, handler).await
            else {
                return Ok(());
            };
            settle(&msg, outcome, &spec.durable, metrics, seq).await?;
            if let Some(p) = position.as_mut() {
                *p = (*p).max(seq);
            }
        }
        // The server's word, asked only at the end of what it had to deliver: redeliveries
        // still owed (a crash before an ack, a retry) keep `num_ack_pending` above zero.
        if pending == 0 && !*caught_up.borrow() && nothing_left(consumer.info().await.map_err(|e| e.to_string())?) {
            caught_up.send_replace(true);
        }
    }
}

/// Like [`run`] for a consumer that feeds no projection (`spec.resume_after` is `None`): up to
/// `at_once` cases are handled at the same time, each case's deliveries in order — a case's
/// next delivery waits for its previous one and for nothing else, so a handler's round trips to
/// the ledger overlap instead of adding up (issue 18: routing kept pace with intake only this
/// way) and no case queues behind another's slow one. A case goes on to its next delivery once
/// the handler is done, without waiting for the server to confirm the ack. A case that retries
/// holds only itself. Several processes may share the durable consumer: the server hands each
/// delivery to one of them.
pub async fn run_by_case<H, F>(
    js: Context,
    spec: Spec,
    metrics: ConsumerMetrics,
    shutdown: CancellationToken,
    at_once: usize,
    handler: H,
) where
    H: FnMut(Delivery) -> F + Clone + Send + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    assert!(spec.resume_after.is_none(), "a projection's consumer handles its events in order, one at a time");
    let mut attempt = 0u32;
    while !shutdown.is_cancelled() {
        match consume_by_case(&js, &spec, &metrics, &shutdown, at_once.max(1), &handler).await {
            Ok(()) => return,
            Err(e) => {
                if !pause_after(&spec, &shutdown, &mut attempt, &e).await {
                    return;
                }
            }
        }
    }
}

/// A delivery as [`run_by_case`] holds it until its case's turn.
type Pending = (async_nats::jetstream::Message, u64, i64, Envelope);

/// The cases being handled, each with its deliveries still to come, oldest first.
type InHand = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<Pending>>>>;

async fn consume_by_case<H, F>(
    js: &Context,
    spec: &Spec,
    metrics: &ConsumerMetrics,
    shutdown: &CancellationToken,
    at_once: usize,
    handler: &H,
) -> Result<(), String>
where
    H: FnMut(Delivery) -> F + Clone + Send + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let consumer = open(js, spec, None).await?;
    let mut messages = deliveries(&consumer, max_ack_pending(spec).min(256) as usize).await?;
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(at_once));
    let in_hand = InHand::default();
    let spec = std::sync::Arc::new(spec.clone());
    let mut cases = tokio::task::JoinSet::new();
    let result = loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = messages.next() => next,
        };
        let msg = match next {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => break Err(e.to_string()),
            None => break Err("message stream ended".into()),
        };
        let (seq, delivered, event) = match receive(&msg, &spec, metrics).await {
            Ok(Received { seq, delivered, event: Some(event), .. }) => (seq, delivered, event),
            Ok(_) => continue, // unreadable: a dead letter
            Err(e) => break Err(e),
        };
        let case = event.case_id.to_string();
        {
            let mut in_hand = in_hand.lock().expect("cases in hand");
            if let Some(waiting) = in_hand.get_mut(&case) {
                waiting.push_back((msg, seq, delivered, event)); // after the one in hand
                continue;
            }
            in_hand.insert(case.clone(), Default::default());
        }
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (handler, spec, metrics, shutdown, in_hand) =
            (handler.clone(), spec.clone(), metrics.clone(), shutdown.clone(), in_hand.clone());
        cases.spawn(async move {
            handle_case(case, (msg, seq, delivered, event), in_hand, handler, &spec, &metrics, &shutdown, permit).await
        });
        while cases.try_join_next().is_some() {}
    };
    while cases.join_next().await.is_some() {}
    result
}

/// Handles `first` and then every later delivery of `case` that arrives meanwhile, in order;
/// gives back its permit when the case has nothing more, then waits (briefly) for its acks.
#[allow(clippy::too_many_arguments)]
async fn handle_case<H, F>(
    case: String,
    first: Pending,
    in_hand: InHand,
    mut handler: H,
    spec: &Spec,
    metrics: &ConsumerMetrics,
    shutdown: &CancellationToken,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    H: FnMut(Delivery) -> F,
    F: Future<Output = Outcome>,
{
    let mut acks = tokio::task::JoinSet::new();
    let mut next = Some(first);
    while let Some((msg, seq, delivered, event)) = next.take() {
        let Some(outcome) = handle_in_place(&msg, seq, delivered, event, spec, metrics, shutdown, &mut handler).await
        else {
            break; // shutting down: what is unacked is redelivered
        };
        // The handler's outputs are durable: the case goes on without waiting for the server to
        // confirm the ack (its answer is one more turn of the stream's loop, behind the
        // appends). A lost ack is redelivered after `ack_wait`; handlers recognise their own
        // answers.
        let (durable, metrics) = (spec.durable.clone(), metrics.clone());
        acks.spawn(async move {
            if let Err(e) = settle(&msg, outcome, &durable, &metrics, seq).await {
                tracing::warn!(consumer = %durable, seq, error = %e, "ack not confirmed; it will be redelivered");
            }
        });
        let mut cases = in_hand.lock().expect("cases in hand");
        next = cases.get_mut(&case).and_then(|waiting| waiting.pop_front());
        if next.is_none() {
            cases.remove(&case);
        }
    }
    drop(permit);
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while acks.join_next().await.is_some() {} }).await;
}

/// The consumer's deliveries, pulled `batch` at a time.
async fn deliveries(consumer: &consumer::PullConsumer, batch: usize) -> Result<consumer::pull::Stream, String> {
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| e.to_string())
}

/// One delivery as read off the wire.
struct Received {
    seq: u64,
    delivered: i64,
    /// What the server has not yet delivered after it.
    pending: u64,
    /// `None` when the payload is no event: it was termed as a dead letter.
    event: Option<Envelope>,
}

/// Reads a delivery's sequence numbers and event and sets the pending gauge; an unreadable
/// event is counted, logged and termed.
async fn receive(
    msg: &async_nats::jetstream::Message,
    spec: &Spec,
    metrics: &ConsumerMetrics,
) -> Result<Received, String> {
    let info = msg.info().map_err(|e| e.to_string())?;
    let (seq, delivered, pending) = (info.stream_sequence, info.delivered, info.pending);
    metrics.pending.set(pending as i64);
    let event = match Envelope::from_slice(&msg.payload) {
        Ok(event) => Some(event),
        Err(e) => {
            dead_letter(metrics, &spec.durable, seq, "unreadable", &e.to_string());
            msg.double_ack_with(AckKind::Term).await.map_err(|e| e.to_string())?;
            None
        }
    };
    Ok(Received { seq, delivered, pending, event })
}

/// Runs the handler on one delivery, retrying a transient failure in place; `None` when shut
/// down while waiting to retry.
#[allow(clippy::too_many_arguments)]
async fn handle_in_place<H, F>(
    msg: &async_nats::jetstream::Message,
    seq: u64,
    mut delivered: i64,
    event: Envelope,
    spec: &Spec,
    metrics: &ConsumerMetrics,
    shutdown: &CancellationToken,
    handler: &mut H,
) -> Option<Outcome>
where
    H: FnMut(Delivery) -> F,
    F: Future<Output = Outcome>,
{
    loop {
        match handler(Delivery { seq, delivered, event: event.clone() }).await {
            Outcome::Retry(why) if delivered < spec.max_deliver => {
                metrics.processed.with_label_values(&["retry"]).inc();
                tracing::warn!(consumer = %spec.durable, seq, delivered, %why, "will retry");
                if !wait_in_progress(msg, backoff(delivered), shutdown).await {
                    return None;
                }
                delivered += 1;
            }
            outcome => return Some(outcome),
        }
    }
}

/// Acks or terms one handled delivery.
async fn settle(
    msg: &async_nats::jetstream::Message,
    outcome: Outcome,
    durable: &str,
    metrics: &ConsumerMetrics,
    seq: u64,
) -> Result<(), String> {
    match outcome {
        Outcome::Done => {
            metrics.processed.with_label_values(&["done"]).inc();
            msg.double_ack().await.map_err(|e| e.to_string())
        }
        Outcome::Retry(why) => {
            dead_letter(metrics, durable, seq, "retries_exhausted", &why);
            msg.double_ack_with(AckKind::Term).await.map_err(|e| e.to_string())
        }
        Outcome::Reject(why) => {
            dead_letter(metrics, durable, seq, "rejected", &why);
            msg.double_ack_with(AckKind::Term).await.map_err(|e| e.to_string())
        }
    }
}

/// Waits `wait` before a retry, telling the server every few seconds that the message is in
/// progress so that it is not redelivered meanwhile. `false` when shut down first.
async fn wait_in_progress(msg: &async_nats::jetstream::Message, wait: Duration, shutdown: &CancellationToken) -> bool {
    let until = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < until {
        let _ = msg.ack_with(AckKind::Progress).await;
        let step = until.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(3));
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(step) => {}
        }
    }
    true
}

fn nothing_left(info: &consumer::Info) -> bool {
    info.num_pending == 0 && info.num_ack_pending == 0
}

fn dead_letter(metrics: &ConsumerMetrics, consumer: &str, seq: u64, reason: &'static str, why: &str) {
    metrics.processed.with_label_values(&["dead_letter"]).inc();
    metrics.dead_letters.with_label_values(&[reason]).inc();
    tracing::error!(consumer, seq, reason, why, "dead letter: event terminated");
}

/// Deliveries unacknowledged at once: one for a consumer that feeds a projection, so the server
/// never hands over an event before every earlier one is acknowledged — not after a crash, a
/// lost connection or a restarted server either — and the projection, which records the
/// highest sequence applied, sees them in order; more for the others, whose handlers look the
/// case up in the ledger.
fn max_ack_pending(spec: &Spec) -> i64 {
    if spec.resume_after.is_some() {
        1
    } else {
        256
    }
}

async fn open(js: &Context, spec: &Spec, resume_after: Option<u64>) -> Result<consumer::PullConsumer, String> {
    let stream = js.get_stream(&spec.stream).await.map_err(|e| e.to_string())?;
    let deliver_policy = match resume_after {
        Some(seq) if seq > 0 => consumer::DeliverPolicy::ByStartSequence { start_sequence: seq + 1 },
        _ => consumer::DeliverPolicy::All,
    };
    let config = consumer::pull::Config {
        durable_name: Some(spec.durable.clone()),
        filter_subjects: spec.filter_subjects.clone(),
        deliver_policy,
        ack_policy: consumer::AckPolicy::Explicit,
        // redelivery after a crash waits this long; handlers are idempotent and quick
        ack_wait: Duration::from_secs(10),
        max_deliver: spec.max_deliver + 1,
        max_ack_pending: max_ack_pending(spec),
        ..Default::default()
    };
    if let Ok(mut existing) = stream.get_consumer::<consumer::pull::Config>(&spec.durable).await {
        let info = existing.info().await.map_err(|e| e.to_string())?;
        let ahead = resume_after.is_some_and(|seq| info.ack_floor.stream_sequence > seq);
        // deliveries a dead process held: redelivered only after `ack_wait`, by when later
        // events would have been applied and the projection would skip them as done (found
        // by the long fault campaign); the projection's position is the truth, start from it
        let held = resume_after.is_some() && info.num_ack_pending > 0;
        let reconfigured = info.config.max_ack_pending != config.max_ack_pending;
        let mut have = info.config.filter_subjects.clone();
        if !info.config.filter_subject.is_empty() {
            have.push(info.config.filter_subject.clone());
        }
        have.sort();
        let mut want = spec.filter_subjects.clone();
        want.sort();
        let refiltered = have != want;
        if !ahead && !refiltered && !held && !reconfigured {
            return Ok(existing);
        }
        tracing::info!(consumer = %spec.durable, ahead, refiltered, held, reconfigured, "recreating the consumer at the projection's position");
        stream.delete_consumer(&spec.durable).await.map_err(|e| e.to_string())?;
    }
    stream.create_consumer(config).await.map_err(|e| e.to_string())
}
