//! What must hold in a node's ledger after any mix of crashes (issue 14), checked from the
//! ledger alone, each check with its count and every failure with the case it concerns.
//!
//! The expected answers are computed with the services' own pure decisions (`escalation::rung`,
//! `notice::plan`, `dues::open_steps`), so the check knows each answer's id and counts it
//! exactly: once, never twice, never missing. A trigger younger than the slack may still be in
//! flight and is only checked for "not twice".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use async_nats::jetstream::Context;
use xinfang_shared::config::Settings;
use xinfang_shared::dues::{open_dues, open_steps, warn_at, Policy};
use xinfang_shared::escalation::{rung, Ladder};
use xinfang_shared::event::{Envelope, EscalationLevel, EventData};
use xinfang_shared::ids::{NodeCode, OrganId};
use xinfang_shared::ledger::read_stream;
use xinfang_shared::notice::plan;
use xinfang_shared::state::{CaseState, Stage};
use xinfang_shared::subjects;
use xinfang_shared::time::{now_cst, Instant};

/// One invariant: how many things it looked at, and what broke it.
#[derive(Debug, Default)]
pub struct Check {
    pub name: &'static str,
    pub checked: usize,
    /// Checked only for "not twice": young triggers whose answer is not there yet.
    pub in_flight: usize,
    pub failures: Vec<String>,
}

impl Check {
    fn new(name: &'static str) -> Self {
        Self { name, ..Default::default() }
    }

    /// Counts one expectation: exactly one answer (`found`), or at most one when `young`.
    fn once(&mut self, found: usize, young: bool, what: impl FnOnce() -> String) {
        self.checked += 1;
        if found == 0 && young {
            self.in_flight += 1;
        }
        if found > 1 || (found == 0 && !young) {
            self.failures.push(format!("{} ({found} found)", what()));
        }
    }
}

/// Every check of one node.
#[derive(Debug, Default)]
pub struct Report {
    pub node: String,
    pub checks: Vec<Check>,
    /// Events read from the ledger.
    pub events: usize,
    /// Cases in the ledger.
    pub cases: usize,
}

impl Report {
    /// No check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.failures.is_empty())
    }

    /// Failures, one line each: node, check, what.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .flat_map(|c| c.failures.iter().map(move |f| format!("{} {}: {f}", self.node, c.name)))
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "node {}: {} cases, {} events", self.node, self.cases, self.events)?;
        for c in &self.checks {
            let verdict = if c.failures.is_empty() { "ok  " } else { "FAIL" };
            writeln!(
                f,
                "  {verdict} {:<56} {:>7} checked ({} not yet due or in flight), {} failed",
                c.name,
                c.checked,
                c.in_flight,
                c.failures.len()
            )?;
            for failure in c.failures.iter().take(10) {
                writeln!(f, "       {failure}")?;
            }
        }
        Ok(())
    }
}

/// What a node is checked against.
pub struct Expectations<'a> {
    pub settings: &'a Settings,
    /// Case ids of every receipt a client was given.
    pub receipts: &'a [String],
    /// Triggers younger than this (at the time of reading) may still be in flight.
    pub slack: Duration,
    /// The ledger event types notification answers (`xinfang_notification::TRIGGERS`).
    pub notice_triggers: &'a [&'a str],
    /// The ledger event types escalation answers (`xinfang_escalation::ladder::TRIGGERS`).
    pub escalation_triggers: &'a [&'a str],
}

/// The event id of a deadline firing (as the deadlines service derives it).
fn firing_id(case: &str, step: &str, due: Instant, kind: &str) -> String {
    xinfang_deadlines::timers::firing_id(case, step, due, kind)
}

/// Where the other nodes' streams are read: node code → a JetStream context of its server
/// (the same context for every node on one shared server).
pub type Others = BTreeMap<String, Context>;

/// Reads node `settings.node` from `js` (the parent's inbox and the receivers of its transfers
/// from `others`, where they are given) and checks every invariant.
pub async fn check_node(js: &Context, others: &Others, x: &Expectations<'_>) -> Result<Report, String> {
    let node = x.settings.node_code();
    let read_at = now_cst();
    let stored = read_stream(js, &subjects::case_stream(&node), subjects::case_events(&node))
        .await
        .map_err(|e| e.to_string())?;
    let cutoff = read_at - chrono::Duration::from_std(x.slack).expect("slack");
    let mut report = Report { node: node.to_string(), events: stored.len(), ..Default::default() };

    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut cases: BTreeMap<&str, Vec<Envelope>> = BTreeMap::new();
    for s in &stored {
        *ids.entry(s.event.event_id.as_str()).or_default() += 1;
        cases.entry(s.event.case_id.as_str()).or_default().push(s.event.clone());
    }
    report.cases = cases.len();

    let mut receipted = Check::new("every receipted petition is in the ledger");
    for case in x.receipts {
        let found = cases.get(case.as_str()).map_or(0, |evs| evs.iter().filter(|e| e.kind == "registered").count());
        receipted.once(found, false, || format!("case {case}: registered"));
    }

    let mut twice = Check::new("no event id twice");
    for (id, n) in &ids {
        twice.once(*n, false, || format!("event {id}"));
    }

    let calendar = x.settings.calendar().map_err(|e| e.to_string())?;
    let policy = Policy::from_settings(x.settings);
    let ladder = Ladder::from_settings(x.settings);
    let organ_name = |o: &OrganId| o.to_string();
    let count = |ids: &HashMap<&str, usize>, id: &str| ids.get(id).copied().unwrap_or(0);

    let mut routed = Check::new("every case is routed exactly once per route trigger");
    let mut timers = Check::new("one timer per open step (each due step fired once)");
    let mut escalated = Check::new("every breach and warning has its escalation once");
    let mut notices = Check::new("every notice is notified or notification_failed once");
    let mut parent_owed = Vec::new();
    let mut transfers = Vec::new();
    for (case, events) in &cases {
        for (i, e) in events.iter().enumerate() {
            let upto = &events[..=i];
            let young = e.at > cutoff;
            // routing: registered, transferred_in and declines of a case awaiting its organ
            if matches!(e.kind.as_str(), "registered" | "transferred_in" | "jurisdiction_declined")
                && CaseState::fold(upto).is_some_and(|s| s.stage == Stage::AwaitingRoute)
            {
                let answers = count(&ids, &e.caused_id("routed")) + count(&ids, &e.caused_id("forwarded"));
                routed.once(answers, young, || format!("case {case}: {} {} routed", e.kind, e.event_id));
            }
            if let (Ok(Some(EventData::Forwarded { to_node, .. })), Some(cause)) = (e.data(), &e.causation_id) {
                transfers.push((case.to_string(), format!("{cause}:transfer:transferred_in"), to_node.to_string()));
            }
            let Some(state) = CaseState::fold(upto) else { continue };
            if x.escalation_triggers.contains(&e.kind.as_str()) {
                if let Some(r) = rung(e, upto, &state, &ladder, &calendar) {
                    let found = count(&ids, &r.id);
                    escalated.once(found, young, || format!("case {case}: {} {}", e.kind, r.id));
                    if r.level == EscalationLevel::Parent && found > 0 {
                        parent_owed.push((case.to_string(), r.id.clone(), r.to.clone()));
                    }
                }
            }
            if x.notice_triggers.contains(&e.kind.as_str()) {
                let dues = open_dues(upto, &state, &policy, &calendar);
                for p in plan(e, upto, &state, &organ_name, &dues) {
                    let found = count(&ids, &format!("{}:notified", p.id)) + count(&ids, &format!("{}:failed", p.id));
                    notices.once(found, young, || format!("case {case}: notice {}", p.id));
                }
            }
        }
        // timers: every step open now and due before the cutoff has fired, once
        let Some(state) = CaseState::fold(events) else { continue };
        for (step, (start, due)) in open_steps(events, &state, &policy, &calendar) {
            timers.once(count(&ids, &firing_id(case, step, due.at, "breached")), due.at > cutoff, || {
                format!("case {case}: {step} due {} breached", due.at)
            });
            let warn = warn_at(start, due.at);
            if warn < due.at {
                timers.once(count(&ids, &firing_id(case, step, due.at, "warned")), warn > cutoff, || {
                    format!("case {case}: {step} due {} warned", due.at)
                });
            }
        }
    }
    let mut arrived = Check::new("every escalation owed to the parent arrived there once");
    let inboxes = ids_at(others, &parent_owed, |code| (subjects::inbox_stream(code), String::new())).await?;
    for (case, id, to) in &parent_owed {
        let Some(counts) = inboxes.get(to) else { continue };
        arrived.once(counts.get(id).copied().unwrap_or(0), false, || {
            format!("case {case}: escalation {id} in the inbox of {to}")
        });
    }
    let mut transferred = Check::new("every transfer arrived at its node once");
    let received = ids_at(others, &transfers, |code| {
        (subjects::case_stream(code), subjects::case_type_filter(code, "transferred_in"))
    })
    .await?;
    for (case, id, to) in &transfers {
        let Some(counts) = received.get(to) else { continue };
        transferred.once(counts.get(id).copied().unwrap_or(0), false, || format!("case {case}: transfer {id} at {to}"));
    }
    report.checks = vec![receipted, routed, twice, timers, escalated, notices, arrived, transferred];
    Ok(report)
}

/// For each node named third in `owed` (case, id, node) that `others` can reach: how often each
/// event id stands in the stream (and filter) `place` gives for that node.
async fn ids_at(
    others: &Others,
    owed: &[(String, String, String)],
    place: impl Fn(&NodeCode) -> (String, String),
) -> Result<HashMap<String, HashMap<String, usize>>, String> {
    let mut out = HashMap::new();
    for node in owed.iter().map(|(_, _, to)| to.clone()).collect::<HashSet<_>>() {
        let Some(js) = others.get(&node) else { continue };
        let code = NodeCode::parse(&node).map_err(|e| e.to_string())?;
        let (stream, filter) = place(&code);
        let stored = read_stream(js, &stream, filter).await.map_err(|e| format!("{stream} of {node}: {e}"))?;
        let mut counts = HashMap::new();
        for s in stored {
            *counts.entry(s.event.event_id).or_default() += 1;
        }
        out.insert(node, counts);
    }
    Ok(out)
}

/// Whether every durable consumer of `streams` has nothing pending and nothing unacknowledged.
pub async fn caught_up(js: &Context, streams: &[String]) -> bool {
    use futures::StreamExt;
    for name in streams {
        let Ok(stream) = js.get_stream_no_info(name).await else { return false };
        let mut infos = stream.consumers();
        while let Some(info) = infos.next().await {
            let Ok(info) = info else { return false };
            if info.config.durable_name.is_some() && (info.num_pending > 0 || info.num_ack_pending > 0) {
                return false;
            }
        }
    }
    true
}
