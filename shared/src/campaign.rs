//! The campaign to settle outstanding petitions (信访突出问题攻坚化解), pure (DOMAIN.md
//! "Leaders' receptions, 包案 and campaigns"): a named period with target rates, the cases a
//! bureau marks as part of it (积案 / 突出问题; `campaign_marked` on each case), and its
//! progress — how many are settled (化解), the satisfaction of the rated ones, by district and
//! by leader — computed from the cases' own events.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::event::{Envelope, EventData, Satisfaction};
use crate::ids::NodeCode;
use crate::petition::Obj;
use crate::reception::Leader;
use crate::state::{CaseState, Stage};
use crate::transfer::registered_of;

/// A campaign as opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub campaign_id: String,
    pub node: NodeCode,
    pub name: String,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
    /// The share of its cases to settle (the seed: ≥ 90 %).
    pub target_settled_rate: f64,
    /// The share of rated cases satisfied or basically satisfied (the seed: 98 %).
    pub target_satisfaction_rate: f64,
}

fn date(obj: &Obj, key: &str) -> Result<NaiveDate, ApiError> {
    let s = obj.req_str(key, 10)?;
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| obj.invalid(key, "must be a date such as 2026-12-31"))
}

fn rate(obj: &Obj, key: &str, default: f64) -> Result<f64, ApiError> {
    match obj.get(key) {
        None => Ok(default),
        Some(v) => {
            v.as_f64().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| obj.invalid(key, "must be a rate from 0 to 1"))
        }
    }
}

/// The id of a campaign: its node, name and first day (opening it twice opens it once).
pub fn campaign_id(node: &NodeCode, name: &str, starts_on: NaiveDate) -> String {
    let mut h = Sha256::new();
    for part in [node.as_str(), name, &starts_on.to_string()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("C{}-{}", starts_on.format("%Y%m%d"), &hex::encode(h.finalize())[..8])
}

/// Parses `POST /v1/campaigns`.
pub fn parse(body: &Value, node: &NodeCode) -> Result<Campaign, ApiError> {
    let obj = Obj::root(body)?;
    obj.only(&["name", "starts_on", "ends_on", "target_settled_rate", "target_satisfaction_rate"])?;
    let name = obj.req_str("name", 100)?.trim().to_string();
    let starts_on = date(&obj, "starts_on")?;
    let ends_on = date(&obj, "ends_on")?;
    if ends_on < starts_on {
        return Err(obj.invalid("ends_on", "must not be before starts_on"));
    }
    Ok(Campaign {
        campaign_id: campaign_id(node, &name, starts_on),
        node: node.clone(),
        name,
        starts_on,
        ends_on,
        target_settled_rate: rate(&obj, "target_settled_rate", 0.9)?,
        target_satisfaction_rate: rate(&obj, "target_satisfaction_rate", 0.98)?,
    })
}

/// Whether a case is settled (化解): its latest opinion rated satisfied or basically
/// satisfied, or terminated after re-review.
pub fn settled(events: &[Envelope]) -> bool {
    let Some(state) = CaseState::fold(events) else { return false };
    if state.stage == Stage::Terminated {
        return true;
    }
    if !matches!(state.stage, Stage::Replied | Stage::ReviewReplied | Stage::Closed) {
        return false;
    }
    satisfaction(events).is_some_and(|s| s != Satisfaction::Unsatisfied)
}

/// The rating of the case's latest opinion, if the petitioner gave one.
pub fn satisfaction(events: &[Envelope]) -> Option<Satisfaction> {
    const OPINIONS: &[&str] = &["replied", "review_replied", "rereview_replied"];
    let last_opinion = events.iter().rposition(|e| OPINIONS.contains(&e.kind.as_str()))?;
    events[last_opinion..].iter().rev().find_map(|e| match e.data() {
        Ok(Some(EventData::Evaluated { satisfaction })) => Some(*satisfaction),
        _ => None,
    })
}

/// The leader a case is counted under: the one in charge of it (包案), else the one who
/// received it at a reception.
pub fn leader_of(events: &[Envelope]) -> Option<Leader> {
    let state = CaseState::fold(events)?;
    state.leader.or(state.received_by)
}

/// The district (county-level division, the first six digits) where the matter is.
pub fn district_of(events: &[Envelope]) -> Option<String> {
    registered_of(events).map(|r| r.petition.location.division.as_str().chars().take(6).collect())
}

/// Cases and settled cases in one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub cases: u64,
    pub settled: u64,
    pub settled_rate: f64,
}

impl Tally {
    fn add(&mut self, settled: bool) {
        self.cases += 1;
        self.settled += u64::from(settled);
        self.settled_rate = ratio(self.settled, self.cases);
    }
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        (n as f64 / d as f64 * 1000.0).round() / 1000.0
    }
}

/// A campaign's progress (`GET /v1/campaigns/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub cases: u64,
    pub settled: u64,
    pub settled_rate: f64,
    /// Cases whose latest opinion the petitioner rated.
    pub rated: u64,
    pub satisfied: u64,
    /// Satisfied or basically satisfied among the rated (0 when none is rated).
    pub satisfaction_rate: f64,
    pub by_district: BTreeMap<String, Tally>,
    /// By the leader's label (张明（区长）); cases no leader holds are not in it.
    pub by_leader: BTreeMap<String, Tally>,
}

/// The progress of a campaign over its cases' histories.
pub fn progress<'a>(cases: impl IntoIterator<Item = &'a [Envelope]>) -> Progress {
    let mut p = Progress::default();
    for events in cases {
        let done = settled(events);
        p.cases += 1;
        p.settled += u64::from(done);
        if let Some(s) = satisfaction(events) {
            p.rated += 1;
            p.satisfied += u64::from(s != Satisfaction::Unsatisfied);
        }
        p.by_district.entry(district_of(events).unwrap_or_else(|| "-".into())).or_default().add(done);
        if let Some(l) = leader_of(events) {
            p.by_leader.entry(l.label()).or_default().add(done);
        }
    }
    p.settled_rate = ratio(p.settled, p.cases);
    p.satisfaction_rate = ratio(p.satisfied, p.rated);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outcome;
    use crate::fixtures;
    use serde_json::json;

    fn node() -> NodeCode {
        NodeCode::parse("320211").unwrap()
    }

    #[test]
    fn a_campaign_is_parsed_with_defaults_and_a_stable_id() {
        let body = json!({"name": "2026年信访积案攻坚化解", "starts_on": "2026-03-01", "ends_on": "2026-12-31"});
        let c = parse(&body, &node()).unwrap();
        assert_eq!((c.target_settled_rate, c.target_satisfaction_rate), (0.9, 0.98));
        assert!(c.campaign_id.starts_with("C20260301-"));
        assert_eq!(parse(&body, &node()).unwrap().campaign_id, c.campaign_id);
        let bad = json!({"name": "x", "starts_on": "2026-03-01", "ends_on": "2026-01-01"});
        assert_eq!(parse(&bad, &node()).unwrap_err().field.as_deref(), Some("ends_on"));
        let bad = json!({"name": "x", "starts_on": "2026-03-01", "ends_on": "2026-04-01", "target_settled_rate": 90});
        assert_eq!(parse(&bad, &node()).unwrap_err().field.as_deref(), Some("target_settled_rate"));
    }

    fn then(events: &mut Vec<Envelope>, data: EventData) {
        let at = events.last().unwrap().at + chrono::Duration::hours(1);
        let id = format!("e{}", events.len());
        events.push(fixtures::event(&id, at, "test", None, data));
    }

    fn replied_case() -> Vec<Envelope> {
        let registered = fixtures::registered("e0", fixtures::at(2, 9));
        let routed = fixtures::routed(&registered, fixtures::at(2, 10));
        let mut e = vec![registered, routed];
        then(&mut e, EventData::Accepted { organ_id: crate::ids::OrganId::parse("320211-zjj").unwrap() });
        then(&mut e, EventData::Replied { outcome: Outcome::Supported, summary: "已修复".into() });
        e
    }

    #[test]
    fn settled_means_a_satisfied_rating_of_the_latest_opinion_or_termination() {
        let mut a = replied_case();
        assert!(!settled(&a), "replied, not yet rated");
        then(&mut a, EventData::Evaluated { satisfaction: Satisfaction::BasicallySatisfied });
        assert!(settled(&a));
        let mut b = replied_case();
        then(&mut b, EventData::Evaluated { satisfaction: Satisfaction::Unsatisfied });
        assert!(!settled(&b));
        let leader = Leader { name: "张明".into(), title: "区长".into() };
        then(&mut b, EventData::LeaderInCharge { leader: leader.clone(), previous: None });
        let c = vec![fixtures::registered("e0", fixtures::at(3, 9))];
        let p = progress([a.as_slice(), b.as_slice(), c.as_slice()]);
        assert_eq!((p.cases, p.settled, p.rated, p.satisfied), (3, 1, 2, 1));
        assert_eq!((p.settled_rate, p.satisfaction_rate), (0.333, 0.5));
        assert_eq!(p.by_leader["张明（区长）"].cases, 1);
        assert_eq!(p.by_district.values().map(|t| t.cases).sum::<u64>(), 3);
    }
}
