//! JetStream fast-ingest batches (ADR-50; nats-server ≥ 2.14 with `allow_batched` on the
//! stream): many appends for the price of a few acknowledgements.
//!
//! Each message goes out as a plain publish whose reply subject names the batch, the message's
//! place in it and the operation: `<inbox>.<flow>.fail.<seq>.<op>.$FI`. The server stores each
//! message as it arrives — checking `Nats-Msg-Id` one message at a time, so a duplicate is
//! dropped and the batch goes on — and answers on `<inbox>.>` with a flow acknowledgement every
//! `flow` messages: `{"type":"ack","seq":N,"msgs":F}` means every message up to `N` is stored
//! (gaps fail the batch, so the acknowledged part is always a prefix). The publisher keeps at
//! most [`OUTSTANDING`] flows unacknowledged, pings when an acknowledgement is late, and ends
//! the batch with an end-of-batch message that is not stored, answered by the batch's
//! publish ack (`{"stream":…,"batch":…,"count":n}`).

use std::time::Duration;

use async_nats::{Client, HeaderMap, Message, Subject, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde::Deserialize;

/// Flows the publisher may have unacknowledged before it waits (ADR-50 recommends 2).
pub const OUTSTANDING: u64 = 2;

/// What the reply subject's last tokens ask of the server.
#[derive(Debug, Clone, Copy)]
enum Op {
    Start = 0,
    Append = 1,
    EndOfBatch = 3,
    Ping = 4,
}

/// A message on the batch's inbox.
#[derive(Debug, Default, Deserialize)]
struct Reply {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<u64>,
    msgs: Option<u64>,
    last_seq: Option<u64>,
    count: Option<u64>,
    error: Option<ApiError>,
}

#[derive(Debug, Default, Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// Why a batch stopped; the messages up to [`FastBatch::stored`] are in the stream regardless.
#[derive(Debug, thiserror::Error)]
#[error("fast-ingest batch: {0}")]
pub struct FastError(pub String);

/// One fast-ingest batch, driven from one task.
pub struct FastBatch {
    client: Client,
    inbox: Subscriber,
    prefix: String,
    first_subject: Option<Subject>,
    sent: u64,
    acked: u64,
    flow: u64,
    started: bool,
    count: Option<u64>,
    timeout: Duration,
}

impl FastBatch {
    /// Opens a batch on `client`, asking the server to acknowledge every `flow` messages and
    /// giving up when an acknowledgement is `timeout` late.
    pub async fn open(client: &Client, flow: u16, timeout: Duration) -> Result<Self, FastError> {
        // the server reads the reply subject from the right and needs exactly two tokens
        // before the flow: `<prefix>.<batch id>`
        let inbox = client.new_inbox();
        if inbox.split('.').count() != 2 {
            return Err(FastError(format!("inbox {inbox} is not two tokens")));
        }
        let subscriber =
            client.subscribe(format!("{inbox}.>")).await.map_err(|e| FastError(format!("subscribe: {e}")))?;
        let flow = u64::from(flow.max(1));
        Ok(Self {
            client: client.clone(),
            inbox: subscriber,
            prefix: format!("{inbox}.{flow}.fail."),
            first_subject: None,
            sent: 0,
            acked: 0,
            flow,
            started: false,
            count: None,
            timeout,
        })
    }

    /// How many messages, from the first, the server has confirmed stored.
    pub fn stored(&self) -> u64 {
        self.acked
    }

    /// Publishes one message into the batch, waiting first if too many are unacknowledged.
    pub async fn add(&mut self, subject: Subject, headers: HeaderMap, payload: Bytes) -> Result<(), FastError> {
        self.drain()?;
        while self.acked + OUTSTANDING * self.flow <= self.sent + 1 {
            self.wait().await?;
        }
        self.sent += 1;
        let op = if self.sent == 1 { Op::Start } else { Op::Append };
        if self.first_subject.is_none() {
            self.first_subject = Some(subject.clone());
        }
        let reply = self.reply(self.sent, op);
        self.client
            .publish_with_reply_and_headers(subject, reply, headers, payload)
            .await
            .map_err(|e| FastError(format!("publish: {e}")))?;
        while self.sent == 1 && !self.started {
            self.wait().await?;
        }
        Ok(())
    }

    /// Ends the batch and waits for the server's account of it; returns how many messages it
    /// holds (all of them: anything less is an error).
    pub async fn finish(mut self) -> Result<u64, FastError> {
        let Some(subject) = self.first_subject.clone() else { return Ok(0) };
        self.drain()?;
        while self.acked + OUTSTANDING * self.flow <= self.sent + 1 {
            self.wait().await?;
        }
        let reply = self.reply(self.sent + 1, Op::EndOfBatch);
        self.client
            .publish_with_reply(subject, reply, Bytes::new())
            .await
            .map_err(|e| FastError(format!("publish: {e}")))?;
        while self.count.is_none() {
            self.wait().await?;
        }
        let _ = self.inbox.unsubscribe().await;
        match self.count {
            Some(n) if n == self.sent => {
                self.acked = n;
                Ok(n)
            }
            n => Err(FastError(format!("the server counted {n:?} of {} messages", self.sent))),
        }
    }

    fn reply(&self, seq: u64, op: Op) -> Subject {
        Subject::from(format!("{}{seq}.{}.$FI", self.prefix, op as u8))
    }

    /// Applies every reply already received, without waiting.
    fn drain(&mut self) -> Result<(), FastError> {
        while let Some(next) = self.inbox.next().now_or_never() {
            let message = next.ok_or_else(|| FastError("inbox closed".into()))?;
            self.apply(&message)?;
        }
        Ok(())
    }

    /// Waits for the next reply, pinging the server twice on the way when it is late.
    async fn wait(&mut self) -> Result<(), FastError> {
        let interval = (self.timeout / 3).max(Duration::from_millis(100));
        for _ in 0..3 {
            match tokio::time::timeout(interval, self.inbox.next()).await {
                Ok(Some(message)) => return self.apply(&message),
                Ok(None) => return Err(FastError("inbox closed".into())),
                Err(_) => {
                    if let Some(subject) = self.first_subject.clone() {
                        let reply = self.reply(self.sent, Op::Ping);
                        let _ = self.client.publish_with_reply(subject, reply, Bytes::new()).await;
                    }
                }
            }
        }
        Err(FastError(format!("no acknowledgement within {:?} ({} of {} stored)", self.timeout, self.acked, self.sent)))
    }

    fn apply(&mut self, message: &Message) -> Result<(), FastError> {
        let reply: Reply =
            serde_json::from_slice(&message.payload).map_err(|e| FastError(format!("unreadable reply: {e}")))?;
        match reply.kind.as_deref() {
            Some("ack") => {
                self.started = true;
                self.acked = self.acked.max(reply.seq.unwrap_or(0));
                self.flow = reply.msgs.unwrap_or(self.flow).max(1);
                Ok(())
            }
            Some("gap") => Err(FastError(format!(
                "messages lost after {} (server saw {})",
                reply.last_seq.unwrap_or(0),
                reply.seq.unwrap_or(0)
            ))),
            Some("err") => {
                let e = reply.error.unwrap_or_default();
                Err(FastError(format!(
                    "message {} refused: {} ({})",
                    reply.seq.unwrap_or(0),
                    e.description,
                    e.err_code
                )))
            }
            _ => match (reply.error, reply.count) {
                (Some(e), _) => Err(FastError(format!("{} ({})", e.description, e.err_code))),
                (None, Some(count)) => {
                    self.started = true;
                    self.count = Some(count);
                    Ok(())
                }
                (None, None) => Ok(()),
            },
        }
    }
}
