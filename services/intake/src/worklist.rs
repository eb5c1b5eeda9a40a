//! The node's worklist (待办) as a sled projection of the ledger: the events that move each
//! open case (`c/<case>`), an index of open cases by organ (`o/<organ>/<case>`), and counts
//! of every case by stage and organ (`n/<stage>/<organ>`, final cases included) and of
//! repeats (`r`). A case that reaches a final stage leaves the index and its events move to
//! `f/<case>`, where nothing moves them any more (Open311 lists closed requests from there).
//! Lines are computed when asked ([`shared::worklist::item`]), so a new holiday schedule
//! moves their dues at once.
//!
//! An event's writes are applied in order, not as one batch ([`Projection::apply`]): a count
//! carries the ledger sequence it last counted, so an event applied again after a crash does
//! not count twice, and a final case is written to `f/` before it leaves `c/`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use xinfang_shared::access::ListScope;
use xinfang_shared::calendar::Calendar;
use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::dues::Policy;
use xinfang_shared::event::Envelope;
use xinfang_shared::projection::{decode_count, encode_count, Batch, Projection, StoreError};
use xinfang_shared::state::CaseState;
use xinfang_shared::time::Instant;
use xinfang_shared::transfer::registered_of;
use xinfang_shared::worklist::{self, Filter, Item, Urgency};

/// The projection's tree; a new layout takes a new name, so it is rebuilt from the ledger.
pub const TREE: &str = "worklist-3";

/// Trees of older layouts, dropped at start (version 1 forgot final cases; version 2's counts
/// carried no sequence).
pub const OLD_TREES: &[&str] = &["worklist", "worklist-2"];

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

fn read_count(p: &Projection, key: &[u8]) -> Result<(u64, u64), StoreError> {
    Ok(p.tree().get(key)?.map_or((0, 0), |v| decode_count(&v)))
}

/// Adds `delta` to the count at `key` as the event at `seq`, unless it counted that event.
fn count(p: &Projection, batch: &mut Batch, key: Vec<u8>, delta: i64, seq: u64) -> Result<(), StoreError> {
    let (n, last) = read_count(p, &key)?;
    if seq > last {
        batch.insert(key, encode_count(n.saturating_add_signed(delta), seq));
    }
    Ok(())
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
        count(p, &mut batch, key, delta, d.seq)?;
    }
    if before.is_none() && registered_of(std::slice::from_ref(e)).is_some_and(|r| r.repeat_of.is_some()) {
        count(p, &mut batch, REPEATS.to_vec(), 1, d.seq)?;
    }
    if let Some(organ) = before.as_ref().and_then(|b| b.organ.as_ref()) {
        batch.remove(organ_key(organ.as_str(), case));
    }
    if after.stage.is_final() {
        batch.insert(final_key(case), serde_json::to_vec(&events).expect("serializes"));
        batch.remove(case_key(case));
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
    let mut by_stage: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_organ: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for item in p.tree().scan_prefix(b"n/") {
        let (k, v) = item?;
        let (n, _) = decode_count(&v);
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
        "total": by_stage.values().sum::<u64>(),
        "by_stage": by_stage,
        "by_organ": by_organ,
        "late": late,
        "late_total": late_total,
        "overdue": overdue,
        "repeats": read_count(p, REPEATS)?.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xinfang_shared::event::EventData;
    use xinfang_shared::fixtures::{at, event, registered, routed};
    use xinfang_shared::projection::write_in_order;

    /// A case registered, routed and closed, as its deliveries.
    fn lifecycle() -> Vec<Delivery> {
        let r = registered("ev-registered", at(1, 9));
        let routed = routed(&r, at(1, 10));
        let closed = event("ev-closed", at(2, 9), "staff", None, EventData::Closed { reason: "办结".into() });
        [r, routed, closed].into_iter().zip(1..).map(|(event, seq)| Delivery { seq, delivered: 1, event }).collect()
    }

    /// Everything in the tree but the position.
    fn state(p: &Projection) -> Vec<(Vec<u8>, Vec<u8>)> {
        p.tree()
            .iter()
            .flatten()
            .filter(|(k, _)| !k.starts_with(b"\0"))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    async fn apply_all(p: &Projection, deliveries: impl IntoIterator<Item = Delivery>) {
        for d in deliveries {
            assert!(matches!(apply(p, d).await, Outcome::Done));
        }
    }

    #[tokio::test]
    async fn an_event_applied_again_after_a_crash_leaves_what_one_application_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let once = Projection::open(dir.path(), TREE).unwrap();
        apply_all(&once, lifecycle()).await;
        let want = state(&once);
        assert!(want.iter().any(|(k, _)| k.starts_with(b"f/")) && !want.iter().any(|(k, _)| k.starts_with(b"c/")));
        assert!(want.iter().any(|(k, v)| k.starts_with(b"n/closed/") && decode_count(v).0 == 1));
        for cut_event in 0..lifecycle().len() {
            let before = || lifecycle().into_iter().take(cut_event);
            let d = lifecycle().swap_remove(cut_event);
            let n = {
                let dir = tempfile::tempdir().unwrap();
                let p = Projection::open(dir.path(), TREE).unwrap();
                apply_all(&p, before()).await;
                apply_one(&p, &d).unwrap().into_writes().len()
            };
            for kept in 0..=n {
                // a crash kept the first `kept` writes of the event and not its position
                let dir = tempfile::tempdir().unwrap();
                let p = Projection::open(dir.path(), TREE).unwrap();
                apply_all(&p, before()).await;
                let writes = apply_one(&p, &d).unwrap().into_writes();
                write_in_order(p.tree(), writes.into_iter().take(kept).collect()).unwrap();
                apply_all(&p, lifecycle().into_iter().skip(cut_event)).await;
                assert_eq!(state(&p), want, "event {cut_event} cut after {kept} of its {n} writes");
            }
        }
    }
}
