//! The node's worklist (待办) as a sled projection of the ledger: the events that move each
//! open case (`c/<case>`), an index of open cases by organ (`o/<organ>/<case>`), and counts
//! of every case by stage and organ (`n/<stage>/<organ>`, final cases included) and of
//! repeats (`r`). A case that reaches a final stage leaves the index and its events move to
//! `f/<case>`, where nothing moves them any more (Open311 lists closed requests from there).
//! Lines are computed when asked ([`shared::worklist::item`]), so a new holiday schedule
//! moves their dues at once.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use xinfang_shared::access::ListScope;
use xinfang_shared::calendar::Calendar;
use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::dues::Policy;
use xinfang_shared::event::Envelope;
use xinfang_shared::projection::{Batch, Projection, StoreError};
use xinfang_shared::state::CaseState;
use xinfang_shared::time::Instant;
use xinfang_shared::transfer::registered_of;
use xinfang_shared::worklist::{self, Filter, Item, Urgency};

/// The projection's tree; a new layout takes a new name, so it is rebuilt from the ledger.
pub const TREE: &str = "worklist-2";

/// Trees of older layouts, dropped at start (version 1 forgot final cases).
pub const OLD_TREES: &[&str] = &["worklist"];

/// The most lines one answer carries.
pub const MAX_ITEMS: usize = 500;

fn case_key(case: &str) -> Vec<u8> {
    format!("c/{case}").into_bytes()
}

fn final_key(case: &str) -> Vec<u8> {
    format!("f/{case}").into_bytes()
}

fn organ_key(organ: &str, case: &str) -> Vec<u8> {
    format!("o/{organ}/{case}").into_bytes()
}

fn count_key(state: &CaseState) -> Vec<u8> {
    format!("n/{}/{}", state.stage.as_str(), state.organ.as_ref().map_or("-", |o| o.as_str())).into_bytes()
}

const REPEATS: &[u8] = b"r";

fn read_count(p: &Projection, key: &[u8]) -> Result<i64, StoreError> {
    Ok(p.tree().get(key)?.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).map(i64::from_be_bytes).unwrap_or(0))
}

fn events_of(p: &Projection, case: &str) -> Result<Vec<Envelope>, StoreError> {
    Ok(p.tree().get(case_key(case))?.and_then(|v| serde_json::from_slice(&v).ok()).unwrap_or_default())
}

/// Applies one ledger event (of [`worklist::TYPES`]).
pub async fn apply(p: &Projection, d: Delivery) -> Outcome {
    match apply_one(p, &d) {
        Ok(batch) => match p.apply(d.seq, batch).await {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Retry(e.to_string()),
        },
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

fn apply_one(p: &Projection, d: &Delivery) -> Result<Batch, StoreError> {
    let mut batch = Batch::default();
    if d.seq <= p.last_applied() {
        return Ok(batch);
    }
    let e = &d.event;
    let case = e.case_id.as_str();
    let mut events = events_of(p, case)?;
    let before = CaseState::fold(&events);
    if before.is_none() && !matches!(e.kind.as_str(), "registered" | "transferred_in") {
        // a final case that left the worklist, or a case that never started here
        return Ok(batch);
    }
    if events.iter().any(|x| x.event_id == e.event_id) {
        return Ok(batch);
    }
    events.push(e.clone());
    let Some(after) = CaseState::fold(&events) else { return Ok(batch) };
    let mut counts: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    if let Some(b) = &before {
        *counts.entry(count_key(b)).or_default() -= 1;
    }
    *counts.entry(count_key(&after)).or_default() += 1;
    for (key, delta) in counts.into_iter().filter(|(_, d)| *d != 0) {
        batch.insert(key.clone(), &(read_count(p, &key)? + delta).max(0).to_be_bytes());
    }
    if before.is_none() && registered_of(std::slice::from_ref(e)).is_some_and(|r| r.repeat_of.is_some()) {
        batch.insert(REPEATS, &(read_count(p, REPEATS)? + 1).to_be_bytes());
    }
    if let Some(organ) = before.as_ref().and_then(|b| b.organ.as_ref()) {
        batch.remove(organ_key(organ.as_str(), case));
    }
    if after.stage.is_final() {
        batch.remove(case_key(case));
        batch.insert(final_key(case), serde_json::to_vec(&events).expect("serializes"));
    } else {
        batch.insert(case_key(case), serde_json::to_vec(&events).expect("serializes"));
        if let Some(organ) = &after.organ {
            batch.insert(organ_key(organ.as_str(), case), b"".as_slice());
        }
    }
    Ok(batch)
}

/// The open cases in `scope` that `filter` keeps, overdue first (at most [`MAX_ITEMS`]), and
/// how many there were in all.
pub fn list(
    p: &Projection,
    scope: &ListScope,
    filter: &Filter,
    policy: &Policy,
    cal: &Calendar,
    now: Instant,
) -> Result<(Vec<Item>, usize), StoreError> {
    let cases: Vec<String> = match scope {
        ListScope::Organ(o) => p
            .tree()
            .scan_prefix(format!("o/{o}/"))
            .keys()
            .filter_map(|k| k.ok())
            .filter_map(|k| String::from_utf8_lossy(&k).rsplit('/').next().map(str::to_string))
            .collect(),
        ListScope::Node => p
            .tree()
            .scan_prefix(b"c/")
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| String::from_utf8_lossy(&k[2..]).into_owned())
            .collect(),
    };
    let mut items = Vec::new();
    for case in cases {
        let events = events_of(p, &case)?;
        if let Some(item) = worklist::item(&events, policy, cal, now).filter(|i| filter.keeps(i)) {
            items.push(item);
        }
    }
    worklist::sort(&mut items);
    let total = items.len();
    items.truncate(MAX_ITEMS);
    Ok((items, total))
}

/// Every case registered in `[from, to]`, open or final, newest first.
pub fn registered_between(
    p: &Projection,
    (from, to): (Instant, Instant),
    policy: &Policy,
    cal: &Calendar,
    now: Instant,
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    for prefix in [b"c/", b"f/"] {
        for entry in p.tree().scan_prefix(prefix) {
            let (_, v) = entry?;
            let events: Vec<Envelope> = serde_json::from_slice(&v).unwrap_or_default();
            if let Some(item) = worklist::item(&events, policy, cal, now) {
                if item.registered_at >= from && item.registered_at <= to {
                    items.push(item);
                }
            }
        }
    }
    items.sort_by(|a, b| b.registered_at.cmp(&a.registered_at).then_with(|| a.case_id.cmp(&b.case_id)));
    Ok(items)
}

/// The bureau's overview (本级): every case by stage and by organ, the open ones late or
/// warned, and the repeat petitions.
pub fn overview(p: &Projection, policy: &Policy, cal: &Calendar, now: Instant) -> Result<Value, StoreError> {
    let mut by_stage: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_organ: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for item in p.tree().scan_prefix(b"n/") {
        let (k, v) = item?;
        let n = <[u8; 8]>::try_from(v.as_ref()).map(i64::from_be_bytes).unwrap_or(0);
        if n == 0 {
            continue;
        }
        let key = String::from_utf8_lossy(&k[2..]).into_owned();
        let Some((stage, organ)) = key.split_once('/') else { continue };
        *by_stage.entry(stage.to_string()).or_default() += n;
        *by_organ.entry(organ.to_string()).or_default().entry(stage.to_string()).or_default() += n;
    }
    let late_filter = Filter { late_only: true, ..Default::default() };
    let (late, late_total) = list(p, &ListScope::Node, &late_filter, policy, cal, now)?;
    let overdue = late.iter().filter(|i| i.urgency == Urgency::Overdue).count();
    Ok(json!({
        "ok": true,
        "total": by_stage.values().sum::<i64>(),
        "by_stage": by_stage,
        "by_organ": by_organ,
        "late": late,
        "late_total": late_total,
        "overdue": overdue,
        "repeats": read_count(p, REPEATS)?,
    }))
}
