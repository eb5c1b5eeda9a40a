//! Cross-node escalations in sled, both ends:
//! - on a parent node, the inbox (收件箱) of escalations from its children: tree `inbox`, a
//!   projection of `XF_INBOX_N` (`e/<escalation_id>` → [`Received`]), and tree `answers`, a
//!   projection of the node's own outbox (`a/<escalation_id>` → [`Answer`] for the
//!   acknowledgement, `d/<escalation_id>/<directive_id>` → [`Answer`] for each directive).
//!   Both rebuild from their streams; the API also writes its answers through at once.
//! - on a child node, answers from the parent become `escalation_acknowledged` and
//!   `directive_received` in the case ledger (ids derived from the answer's id).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use xinfang_shared::calendar::LiveCalendar;
use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::escalation::{self, directive_id, Ack, Directive, Notice};
use xinfang_shared::event::{self, Actor, Envelope, EscalationLevel, EventData, Step};
use xinfang_shared::ids::{CaseId, NodeCode};
use xinfang_shared::ledger::{Expect, Ledger};
use xinfang_shared::projection::{Batch, Projection};
use xinfang_shared::time::{now_cst, Instant};

use crate::ladder::level_name;
use crate::metrics::Metrics;

/// An escalation as it reached this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Received {
    pub id: String,
    pub from_node: NodeCode,
    pub case_id: CaseId,
    pub level: EscalationLevel,
    #[serde(default)]
    pub step: Option<Step>,
    pub reason: String,
    pub sent_at: Instant,
    pub received_at: Instant,
    pub snapshot: Vec<Value>,
}

/// An acknowledgement or a directive sent down.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    pub at: Instant,
    pub by: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub due_at: Option<Instant>,
}

/// Where an escalation stands in the office.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// 待签收: nobody has looked at it.
    Open,
    /// 已签收: acknowledged, no directive yet.
    Acknowledged,
    /// 已督办: a directive went down.
    Directed,
}

/// An escalation with what the office did about it.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    #[serde(flatten)]
    pub received: Received,
    pub state: State,
    pub ack: Option<Answer>,
    pub directives: Vec<Answer>,
}

/// Which escalations to list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    /// Child node code.
    #[serde(default)]
    pub child: Option<String>,
    #[serde(default)]
    pub level: Option<String>,
    /// `open`, `acknowledged`, `directed`, `pending` (open or acknowledged) or `all` (default).
    #[serde(default)]
    pub state: Option<String>,
    /// Only those received at least this many hours ago.
    #[serde(default)]
    pub min_age_hours: Option<f64>,
}

impl Filter {
    /// Checks the values; an unknown one is an error naming its field.
    pub fn check(&self) -> Result<(), ApiError> {
        if let Some(s) = self.state.as_deref() {
            if !["open", "acknowledged", "directed", "pending", "all", ""].contains(&s) {
                return Err(ApiError::field(
                    ErrorCode::InvalidField,
                    "state",
                    "状态应为 open、acknowledged、directed、pending 或 all",
                ));
            }
        }
        if let Some(l) = self.level.as_deref() {
            if !["reminder", "supervision", "parent", ""].contains(&l) {
                return Err(ApiError::field(
                    ErrorCode::InvalidField,
                    "level",
                    "级别应为 reminder、supervision 或 parent",
                ));
            }
        }
        if let Some(c) = self.child.as_deref() {
            if !c.is_empty() && NodeCode::parse(c).is_err() {
                return Err(ApiError::field(ErrorCode::InvalidField, "child", "来自节点应为 6 位行政区划代码"));
            }
        }
        if self.min_age_hours.is_some_and(|h| !h.is_finite() || h < 0.0) {
            return Err(ApiError::field(ErrorCode::InvalidField, "min_age_hours", "等待时长应为不小于 0 的小时数"));
        }
        Ok(())
    }

    fn keeps(&self, v: &View, now: Instant) -> bool {
        let state_ok = match self.state.as_deref().unwrap_or("all") {
            "open" => v.state == State::Open,
            "acknowledged" => v.state == State::Acknowledged,
            "directed" => v.state == State::Directed,
            "pending" => v.state != State::Directed,
            _ => true,
        };
        let child_ok = self.child.as_deref().is_none_or(|c| c.is_empty() || c == v.received.from_node.as_str());
        let level_ok = self.level.as_deref().is_none_or(|l| l.is_empty() || l == level_name(v.received.level));
        let age_h = (now - v.received.received_at).num_seconds() as f64 / 3600.0;
        let age_ok = self.min_age_hours.is_none_or(|h| age_h >= h);
        state_ok && child_ok && level_ok && age_ok
    }
}

/// What the office can send down with a directive.
#[derive(Debug, Clone)]
pub struct DirectiveRequest {
    pub text: String,
    pub due_at: Instant,
    pub by: String,
}

/// Both ends of cross-node escalation.
pub struct Inbox {
    pub ledger: Ledger,
    pub inbox: Projection,
    pub answers: Projection,
    pub calendar: LiveCalendar,
    pub metrics: Metrics,
    /// Credentials (DESIGN.md §11): the office acts, the office and auditors read.
    pub gate: Arc<xinfang_shared::gate::Gate>,
    /// Who read which case's snapshot (it carries the petitioners).
    pub audit: xinfang_shared::audit::Audit,
}

impl Inbox {
    /// One escalation with its case snapshot, for `caller`: the office sees the petitioners
    /// (and the read is recorded first), auditors see them masked.
    pub async fn read_one(&self, caller: &xinfang_shared::access::Caller, id: &str) -> Result<Value, ApiError> {
        use xinfang_shared::access::{self, Sight};
        let sight = access::may_read_escalations(caller)?;
        let view = self
            .get(id)
            .ok_or_else(|| ApiError::field(ErrorCode::NotFound, "id", format!("本节点收件箱中没有督办件 {id}")))?;
        let mut value = serde_json::to_value(&view).expect("serializes");
        match sight {
            Sight::Full => self.audit.read(caller.staff()?, &view.received.case_id, "escalation_view").await?,
            Sight::Masked => access::mask_personal_data(&mut value),
        }
        Ok(value)
    }
}

fn esc_key(id: &str) -> Vec<u8> {
    format!("e/{id}").into_bytes()
}

fn ack_key(id: &str) -> Vec<u8> {
    format!("a/{id}").into_bytes()
}

fn directive_key(id: &str, directive: &str) -> Vec<u8> {
    format!("d/{id}/{directive}").into_bytes()
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::general(ErrorCode::Unavailable, format!("台账暂不可用，请稍后重试：{e}"))
}

impl Inbox {
    /// A message from another node (`XF_INBOX_N`): an escalation from a child, or an answer
    /// from the parent.
    pub async fn receive(&self, d: Delivery) -> Outcome {
        let m = &d.event;
        match m.kind.as_str() {
            escalation::ESCALATION => {
                let notice: Notice = match serde_json::from_value(m.data.clone()) {
                    Ok(n) => n,
                    Err(e) => return Outcome::Reject(format!("bad escalation {}: {e}", m.event_id)),
                };
                let mut batch = Batch::default();
                let fresh = !self.inbox.tree().contains_key(esc_key(&m.event_id)).unwrap_or(false);
                if fresh {
                    let r = Received {
                        id: m.event_id.clone(),
                        from_node: m.node.clone(),
                        case_id: m.case_id.clone(),
                        level: notice.level,
                        step: notice.step,
                        reason: notice.reason,
                        sent_at: m.at,
                        received_at: now_cst(),
                        snapshot: notice.snapshot,
                    };
                    batch.insert(esc_key(&r.id), serde_json::to_vec(&r).expect("serializes"));
                }
                match self.inbox.apply(d.seq, batch).await {
                    Ok(applied) => {
                        if applied && fresh {
                            self.metrics.received.with_label_values(&[m.node.as_str(), level_name(notice.level)]).inc();
                            tracing::info!(case = %m.case_id, child = %m.node, "escalation received");
                        }
                        Outcome::Done
                    }
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            escalation::ACK | escalation::DIRECTIVE => {
                let outcome = self.record_in_ledger(m).await;
                if matches!(outcome, Outcome::Done) {
                    if let Err(e) = self.inbox.apply(d.seq, Batch::default()).await {
                        return Outcome::Retry(e.to_string());
                    }
                }
                outcome
            }
            other => {
                let _ = self.inbox.apply(d.seq, Batch::default()).await;
                tracing::debug!(kind = other, "not an escalation message; skipped");
                Outcome::Done
            }
        }
    }

    /// An answer from the parent, recorded in the case's ledger once.
    async fn record_in_ledger(&self, m: &Envelope) -> Outcome {
        let data = if m.kind == escalation::ACK {
            match serde_json::from_value::<Ack>(m.data.clone()) {
                Ok(a) => EventData::EscalationAcknowledged {
                    escalation_id: a.escalation_id,
                    by: a.by,
                    from_node: Some(m.node.clone()),
                },
                Err(e) => return Outcome::Reject(format!("bad ack {}: {e}", m.event_id)),
            }
        } else {
            match serde_json::from_value::<Directive>(m.data.clone()) {
                Ok(d) => EventData::DirectiveReceived {
                    text: d.text,
                    due_at: d.due_at,
                    directive_id: m.event_id.clone(),
                    escalation_id: d.escalation_id,
                    from_node: Some(m.node.clone()),
                },
                Err(e) => return Outcome::Reject(format!("bad directive {}: {e}", m.event_id)),
            }
        };
        let event = Envelope::new(
            m.caused_id("received"),
            m.case_id.clone(),
            self.ledger.node().clone(),
            now_cst(),
            Actor::system("escalation"),
            Some(m.event_id.clone()),
            data,
        );
        match self.ledger.events(&m.case_id).await {
            Ok(h) if h.is_empty() => return Outcome::Reject(format!("{} for unknown case {}", m.kind, m.case_id)),
            Ok(h) if event::answered(&h, &[&event.event_id]) => return Outcome::Done,
            Ok(_) => {}
            Err(e) => return Outcome::Retry(e.to_string()),
        }
        match self.ledger.append(&event, Expect::Any).await {
            Ok(_) => {
                self.metrics.answers_received.with_label_values(&[m.kind.as_str()]).inc();
                tracing::info!(case = %m.case_id, kind = %m.kind, from = %m.node, "answer from the parent recorded");
                Outcome::Done
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// An answer this node sent (its own outbox), kept with the escalation it answers.
    pub async fn record_answer(&self, d: Delivery) -> Outcome {
        let m = &d.event;
        let mut batch = Batch::default();
        match m.kind.as_str() {
            escalation::ACK => match serde_json::from_value::<Ack>(m.data.clone()) {
                Ok(a) => {
                    let answer = Answer { id: m.event_id.clone(), at: m.at, by: a.by, text: None, due_at: None };
                    batch.insert(ack_key(&a.escalation_id), serde_json::to_vec(&answer).expect("serializes"));
                }
                Err(e) => return Outcome::Reject(format!("bad ack {}: {e}", m.event_id)),
            },
            escalation::DIRECTIVE => match serde_json::from_value::<Directive>(m.data.clone()) {
                Ok(x) => {
                    let answer = Answer {
                        id: m.event_id.clone(),
                        at: m.at,
                        by: x.by,
                        text: Some(x.text),
                        due_at: Some(x.due_at),
                    };
                    batch.insert(
                        directive_key(&x.escalation_id, &m.event_id),
                        serde_json::to_vec(&answer).expect("serializes"),
                    );
                }
                Err(e) => return Outcome::Reject(format!("bad directive {}: {e}", m.event_id)),
            },
            _ => {}
        }
        match self.answers.apply(d.seq, batch).await {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    fn view(&self, r: Received) -> View {
        let tree = self.answers.tree();
        let ack = tree.get(ack_key(&r.id)).ok().flatten().and_then(|v| serde_json::from_slice::<Answer>(&v).ok());
        let mut directives: Vec<Answer> = tree
            .scan_prefix(format!("d/{}/", r.id).as_bytes())
            .flatten()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        directives.sort_by_key(|a| a.at);
        let state = if !directives.is_empty() {
            State::Directed
        } else if ack.is_some() {
            State::Acknowledged
        } else {
            State::Open
        };
        View { received: r, state, ack, directives }
    }

    /// One escalation.
    pub fn get(&self, id: &str) -> Option<View> {
        let bytes = self.inbox.tree().get(esc_key(id)).ok().flatten()?;
        serde_json::from_slice::<Received>(&bytes).ok().map(|r| self.view(r))
    }

    /// The escalations `filter` keeps, oldest first.
    pub fn list(&self, filter: &Filter, now: Instant) -> Vec<View> {
        let mut all: Vec<View> = self
            .inbox
            .tree()
            .scan_prefix(b"e/")
            .flatten()
            .filter_map(|(_, v)| serde_json::from_slice::<Received>(&v).ok())
            .map(|r| self.view(r))
            .filter(|v| filter.keeps(v, now))
            .collect();
        all.sort_by(|a, b| a.received.received_at.cmp(&b.received.received_at).then(a.received.id.cmp(&b.received.id)));
        all
    }

    /// 签收: acknowledges an escalation; the child records it. Acknowledging twice is one ack.
    pub async fn acknowledge(&self, id: &str, by: &str) -> Result<View, ApiError> {
        let view = self.get(id).ok_or_else(|| not_found(id))?;
        if view.ack.is_some() {
            return Ok(view);
        }
        let now = now_cst();
        let ack = Ack { escalation_id: id.to_string(), by: by.to_string() };
        let message = self.answer_envelope(&view.received, format!("{id}:ack"), escalation::ACK, &ack, now);
        self.ledger.send(&view.received.from_node, escalation::ACK, &message).await.map_err(unavailable)?;
        let answer = Answer { id: message.event_id.clone(), at: now, by: by.to_string(), text: None, due_at: None };
        self.answers
            .tree()
            .insert(ack_key(id), serde_json::to_vec(&answer).expect("serializes"))
            .map_err(unavailable)?;
        self.first_answer(&view, now);
        self.metrics.answers.with_label_values(&["ack"]).inc();
        self.refresh_gauges(now);
        Ok(self.get(id).unwrap_or(view))
    }

    /// 督办单: answers an escalation with a directive; the child records it and arms its due.
    /// The directive's id follows its content, so a form sent twice is one directive.
    pub async fn direct(&self, id: &str, req: DirectiveRequest) -> Result<(View, String), ApiError> {
        let view = self.get(id).ok_or_else(|| not_found(id))?;
        let now = now_cst();
        let did = directive_id(id, &req.text, req.due_at);
        if view.directives.iter().any(|d| d.id == did) {
            return Ok((view, did));
        }
        let directive =
            Directive { escalation_id: id.to_string(), text: req.text.clone(), due_at: req.due_at, by: req.by.clone() };
        let message = self.answer_envelope(&view.received, did.clone(), escalation::DIRECTIVE, &directive, now);
        self.ledger.send(&view.received.from_node, escalation::DIRECTIVE, &message).await.map_err(unavailable)?;
        let answer = Answer { id: did.clone(), at: now, by: req.by, text: Some(req.text), due_at: Some(req.due_at) };
        self.answers
            .tree()
            .insert(directive_key(id, &did), serde_json::to_vec(&answer).expect("serializes"))
            .map_err(unavailable)?;
        if view.ack.is_none() {
            self.first_answer(&view, now);
        }
        self.metrics.answers.with_label_values(&["directive"]).inc();
        self.refresh_gauges(now);
        Ok((self.get(id).unwrap_or(view), did))
    }

    fn first_answer(&self, view: &View, now: Instant) {
        if view.ack.is_none() && view.directives.is_empty() {
            let secs = (now - view.received.received_at).num_milliseconds().max(0) as f64 / 1000.0;
            self.metrics.ack_seconds.with_label_values(&[view.received.from_node.as_str()]).observe(secs);
        }
    }

    fn answer_envelope<T: Serialize>(&self, r: &Received, id: String, kind: &str, data: &T, now: Instant) -> Envelope {
        Envelope {
            event_id: id,
            case_id: r.case_id.clone(),
            kind: kind.to_string(),
            node: self.ledger.node().clone(),
            at: now,
            actor: Actor::system("escalation"),
            recorded_by: None,
            causation_id: Some(r.id.clone()),
            data: serde_json::to_value(data).expect("serializes"),
            typed: Default::default(),
        }
    }

    /// Recomputes `xf_escalation_open{child,age}`.
    pub fn refresh_gauges(&self, now: Instant) {
        self.metrics.open.reset();
        for v in self.list(&Filter { state: Some("open".into()), ..Filter::default() }, now) {
            let age = (now - v.received.received_at).num_hours();
            let bucket = match age {
                h if h < 24 => "lt_1d",
                h if h < 72 => "1d_3d",
                h if h < 168 => "3d_7d",
                _ => "ge_7d",
            };
            self.metrics.open.with_label_values(&[v.received.from_node.as_str(), bucket]).inc();
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::field(ErrorCode::NotFound, "id", format!("本节点收件箱中没有督办件 {id}"))
}
