//! One ledger event → at most one routing decision on record. Idempotent: the outputs carry
//! ids derived from the cause, so a re-publish after a crash is dropped by the stream, and an
//! event whose answer (`routed` or `forwarded` under those ids) is already in the case is acked
//! without writing. Only routing's own ids count: other services answer the same events.
//!
//! A `registered` event is usually still its case's latest when routing gets it: routing then
//! decides on that event alone and appends on the ledger's condition that nothing was written to
//! the case since (issue 18: no read of the case on the way to `routed`). Otherwise — the
//! condition fails, or the answer is a forward — it reads the whole history as for every other
//! event.

use chrono::Utc;
use xinfang_shared::calendar::Period;
use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::event::{self, Actor, Envelope, EventData};
use xinfang_shared::ids::{NodeCode, OrganId};
use xinfang_shared::ledger::{AppendError, Expect, Ledger};
use xinfang_shared::routing::{Decision, History, Router};
use xinfang_shared::state::{CaseState, Stage};
use xinfang_shared::time::to_cst;
use xinfang_shared::transfer::{self, registered_of, Transfer};

use crate::metrics::Metrics;
use crate::rules::Rules;

/// The routing service's working parts.
pub struct Routing {
    pub ledger: Ledger,
    pub rules: Rules,
    pub metrics: Metrics,
}

impl Routing {
    /// Handles one delivery from the case stream.
    pub async fn handle(&self, d: Delivery) -> Outcome {
        let (why, forward) = if d.event.kind == "registered" {
            match self.route_unchanged(&d).await {
                Unchanged::Done(outcome) => return outcome,
                Unchanged::Changed => ("case_changed", None),
                Unchanged::Forward(decision) => ("forward", Some(decision)),
            }
        } else {
            ("not_registered", None)
        };
        self.metrics.case_reads.with_label_values(&[why]).inc();
        // a forward decided on the `registered` alone still holds if nothing came after it
        let decided = forward.map(|decision| (d.seq, decision));
        self.route_on_history(&d.event, decided).await
    }

    /// The usual case: nothing has been written to the case since it was registered, so the
    /// `registered` event alone is its history. Routes on it and appends `routed` only if it is
    /// still the case's latest event (the ledger checks, atomically) — no read of the case.
    /// Not done when the case has moved on (another service's event, routing's own earlier
    /// answer) or the decision is a forward (two writes): then the whole history decides.
    async fn route_unchanged(&self, d: &Delivery) -> Unchanged {
        let events = std::slice::from_ref(&d.event);
        let decision = match self.decide(&d.event, events).await {
            Ok(Some(decision @ Decision::Assign { .. })) => decision,
            Ok(Some(decision @ Decision::Forward { .. })) => return Unchanged::Forward(decision),
            // not awaiting a route on its own `registered`? let the whole case say
            Ok(None) => return Unchanged::Changed,
            Err(outcome) => return Unchanged::Done(outcome),
        };
        match self.answer(&d.event, events, decision, Expect::LastSeq(d.seq)).await {
            Err(AppendError::Conflict) => Unchanged::Changed,
            result => Unchanged::Done(self.settled(&d.event, result)),
        }
    }

    /// Reads the case's whole history and answers `cause` unless routing already has. `decided`:
    /// a decision already taken on the case as it stood at that sequence, used if it still does.
    async fn route_on_history(&self, cause: &Envelope, decided: Option<(u64, Decision)>) -> Outcome {
        let history = match self.ledger.history(&cause.case_id).await {
            Ok(h) => h,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let latest = history.last().map(|s| s.seq);
        let events: Vec<Envelope> = history.into_iter().map(|s| s.event).collect();
        if answered(cause, &events) {
            self.metrics.skipped.inc();
            return Outcome::Done;
        }
        let decision = match decided {
            Some((seq, decision)) if latest == Some(seq) => Ok(Some(decision)),
            _ => self.decide(cause, &events).await,
        };
        match decision {
            Ok(Some(decision)) => {
                let result = self.answer(cause, &events, decision, Expect::Any).await;
                self.settled(cause, result)
            }
            Ok(None) => Outcome::Done,
            Err(outcome) => outcome,
        }
    }

    /// What `cause` calls for, given the case's `events` (up to at least `cause`); `None` when
    /// the case moved on since (e.g. withdrawn) and there is nothing to route.
    async fn decide(&self, cause: &Envelope, events: &[Envelope]) -> Result<Option<Decision>, Outcome> {
        let Some(state) = CaseState::fold(events) else {
            return Err(Outcome::Reject(format!("case {} has no registered or transferred_in event", cause.case_id)));
        };
        let settings = self.rules.get();
        let decision = match (cause.kind.as_str(), state.stage) {
            ("registered" | "transferred_in" | "jurisdiction_declined", Stage::AwaitingRoute) => {
                let Some(registered) = registered_of(events) else {
                    return Err(Outcome::Reject(format!("case {} carries no petition", cause.case_id)));
                };
                let mut history = history_of(events);
                history.named = named_organ(cause);
                if let (Some(original), false) = (&registered.repeat_of, registered.terminated_matter) {
                    // only the original's stage and organ matter: the latest event of each type
                    // gives them, without scanning the ledger between its events
                    history.repeat_organ = match self.ledger.latest_of_each_type(original).await {
                        Ok(h) => CaseState::fold(h.iter().map(|s| &s.event))
                            .filter(|s| !s.stage.is_final())
                            .and_then(|s| s.organ),
                        Err(e) => return Err(Outcome::Retry(e.to_string())),
                    };
                }
                Router::new(&settings).route(&registered.petition, &history)
            }
            ("review_requested", Stage::ReviewRequested) | ("rereview_requested", Stage::RereviewRequested) => {
                Router::new(&settings).review(state.organ.as_ref(), None)
            }
            ("transferred_in", Stage::ReviewRequested | Stage::RereviewRequested) => {
                Router::new(&settings).review(state.organ.as_ref(), named_organ(cause).as_ref())
            }
            // the case moved on since this event (e.g. withdrawn): nothing to route
            _ => return Ok(None),
        };
        Ok(Some(decision))
    }

    /// Writes the decision: `routed`, or the transfer and `forwarded`. Returns the result label.
    async fn answer(
        &self,
        cause: &Envelope,
        events: &[Envelope],
        decision: Decision,
        expect: Expect,
    ) -> Result<&'static str, AppendError> {
        match decision {
            Decision::Assign { organ_id, organ_name, level, mode, assigned_days, rule_id, reason, result } => {
                let now = to_cst(Utc::now().fixed_offset());
                let assigned_due = assigned_days.map(|days| self.rules.calendar().due(now, Period::Days(days)).at);
                let routed = EventData::Routed { organ_id, organ_name, level, mode, assigned_due, rule_id, reason };
                self.append(cause, "routed", routed, expect).await.map(|_| result)
            }
            Decision::Forward { to_node, reason, organ_id } => {
                self.forward(cause, events, to_node, reason, organ_id).await.map(|_| "forwarded")
            }
        }
    }

    /// The delivery's outcome once the answer was written (or not), with its metrics.
    fn settled(&self, cause: &Envelope, result: Result<&'static str, AppendError>) -> Outcome {
        match result {
            Ok(result) => {
                if cause.kind != "registered" {
                    self.metrics.reroutes.with_label_values(&[cause.kind.as_str()]).inc();
                }
                self.metrics.routed.with_label_values(&[result]).inc();
                if cause.kind == "registered" {
                    let lag = Utc::now().fixed_offset() - cause.at;
                    self.metrics.latency.observe(lag.num_milliseconds().max(0) as f64 / 1000.0);
                }
                Outcome::Done
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    async fn append(&self, cause: &Envelope, what: &str, data: EventData, expect: Expect) -> Result<(), AppendError> {
        let event = Envelope::new(
            cause.caused_id(what),
            cause.case_id.clone(),
            self.ledger.node().clone(),
            to_cst(Utc::now().fixed_offset()),
            Actor::system("routing"),
            Some(cause.event_id.clone()),
            data,
        );
        self.ledger.append(&event, expect).await.map(|_| ())
    }

    /// 属地: the transfer goes into the outbox first, then `forwarded` is recorded; a crash in
    /// between re-sends the same transfer id, which the outbox and the receiver drop.
    async fn forward(
        &self,
        cause: &Envelope,
        events: &[Envelope],
        to_node: NodeCode,
        reason: String,
        organ_id: Option<OrganId>,
    ) -> Result<(), AppendError> {
        let snapshot = events.iter().map(|e| serde_json::to_value(e).expect("events serialize")).collect();
        let message = Envelope {
            event_id: cause.caused_id(transfer::KIND),
            case_id: cause.case_id.clone(),
            kind: transfer::KIND.into(),
            node: self.ledger.node().clone(),
            at: to_cst(Utc::now().fixed_offset()),
            actor: Actor::system("routing"),
            recorded_by: None,
            causation_id: Some(cause.event_id.clone()),
            data: serde_json::to_value(Transfer {
                to_node: to_node.clone(),
                reason: reason.clone(),
                snapshot,
                organ_id,
            })
            .expect("serializes"),
            typed: Default::default(),
        };
        self.ledger.send(&to_node, transfer::KIND, &message).await?;
        self.append(cause, "forwarded", EventData::Forwarded { to_node, reason }, Expect::Any).await
    }
}

/// What became of routing a `registered` event on itself alone.
enum Unchanged {
    /// Routed (or refused, or to be retried): this is the delivery's outcome.
    Done(Outcome),
    /// The case was written to since: read it.
    Changed,
    /// The decision is a forward: read the case (the transfer carries it).
    Forward(Decision),
}

/// Routing's answers to `cause`: its `routed` or `forwarded`, under their derived ids.
fn own_answers(cause: &Envelope) -> [String; 2] {
    [cause.caused_id("routed"), cause.caused_id("forwarded")]
}

/// Whether the case's `events` already hold routing's answer to `cause`.
fn answered(cause: &Envelope, events: &[Envelope]) -> bool {
    event::answered(events, &own_answers(cause))
}

/// The organ a `transferred_in` names.
fn named_organ(cause: &Envelope) -> Option<OrganId> {
    match cause.data() {
        Ok(Some(EventData::TransferredIn { organ_id, .. })) => organ_id.clone(),
        _ => None,
    }
}

/// What the router needs to know from the case's events.
fn history_of(events: &[Envelope]) -> History {
    let mut h = History::default();
    for e in events {
        match e.data() {
            Ok(Some(EventData::JurisdictionDeclined { organ_id, suggested_organ_id, .. })) => {
                h.declined.push(organ_id.clone());
                h.suggested = suggested_organ_id.clone();
            }
            Ok(Some(EventData::TransferredIn { from_node, .. })) => h.came_from.push(from_node.clone()),
            _ => {}
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use xinfang_shared::fixtures;

    /// Issue 14: notification's receipt for `registered` was in the case first (routing was
    /// down), and routing took it for its own answer: the case was never routed.
    #[test]
    fn another_services_answer_to_the_same_event_does_not_count() {
        let registered = fixtures::registered("01REG", fixtures::at(2, 9));
        let receipt = fixtures::notified(&registered, "receipt");
        assert_eq!(receipt.causation_id.as_deref(), Some("01REG"));
        assert!(!answered(&registered, &[registered.clone(), receipt.clone()]));
        let routed = fixtures::routed(&registered, fixtures::at(2, 10));
        assert!(answered(&registered, &[registered.clone(), receipt.clone(), routed]));
        let mut forwarded = receipt.clone();
        forwarded.event_id = registered.caused_id("forwarded");
        assert!(answered(&registered, &[registered.clone(), receipt, forwarded]));
    }
}
