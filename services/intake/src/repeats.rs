//! Repeat petitions (重复信访, Art. 19 ¶3; Art. 36 ¶3): a sled projection of which cases each
//! petitioner has, kept from the ledger, so a new petition by the same petitioner about the
//! same matter is linked (`repeat_of`) to the open case — or flagged as a terminated matter.
//! Matching policy (DOMAIN.md): same petitioner key, same division, and the same respondent
//! organ or the same category. The projection trails the ledger by the consumer's lag.

use serde::{Deserialize, Serialize};
use xinfang_shared::consumer::{Delivery, Outcome};
use xinfang_shared::event::Envelope;
use xinfang_shared::ids::CaseId;
use xinfang_shared::petition::Petition;
use xinfang_shared::projection::Projection;
use xinfang_shared::transfer::registered_of;

/// Where a petitioner's earlier case stands, as far as repeats are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    Open,
    /// 终结 after re-review: the same matter is not accepted again.
    Terminated,
    /// Closed, refused or sent elsewhere: a new petition is a new matter here.
    Done,
}

/// One earlier case of a petitioner.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    category: String,
    division: String,
    respondent: Option<String>,
    standing: Standing,
}

/// What a new petition repeats, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    pub case_id: CaseId,
    pub terminated: bool,
}

fn key(petitioner: &str, case: &str) -> Vec<u8> {
    format!("p/{petitioner}/{case}").into_bytes()
}

fn case_key(case: &str) -> Vec<u8> {
    format!("c/{case}").into_bytes()
}

/// Finds the earlier case `petition` repeats: an open one first (the newest), else a
/// terminated one.
pub fn find(projection: &Projection, petitioner_keys: &[String], p: &Petition) -> Option<Repeat> {
    let mut open: Option<CaseId> = None;
    let mut terminated: Option<CaseId> = None;
    for pk in petitioner_keys {
        for item in projection.tree().scan_prefix(format!("p/{pk}/").as_bytes()).flatten() {
            let (k, v) = item;
            let Ok(entry) = serde_json::from_slice::<Entry>(&v) else { continue };
            let same_matter = entry.division == p.location.division.as_str()
                && (entry.category == p.category
                    || (entry.respondent.is_some()
                        && entry.respondent.as_deref() == p.respondent_organ_id.as_ref().map(|r| r.as_str())));
            if !same_matter {
                continue;
            }
            let case = String::from_utf8_lossy(&k).rsplit('/').next().and_then(|c| CaseId::parse(c).ok());
            match (entry.standing, case) {
                (Standing::Open, Some(c)) if open.as_ref().is_none_or(|o| c > *o) => open = Some(c),
                (Standing::Terminated, Some(c)) if terminated.as_ref().is_none_or(|o| c > *o) => terminated = Some(c),
                _ => {}
            }
        }
    }
    open.map(|case_id| Repeat { case_id, terminated: false })
        .or(terminated.map(|case_id| Repeat { case_id, terminated: true }))
}

/// Applies one ledger event to the projection.
pub async fn apply(projection: &Projection, d: Delivery) -> Outcome {
    let e: &Envelope = &d.event;
    let mut batch = xinfang_shared::projection::Batch::default();
    let standing = match e.kind.as_str() {
        "registered" | "transferred_in" => {
            let Some(r) = registered_of(std::slice::from_ref(e)) else { return Outcome::Done };
            let entry = Entry {
                category: r.petition.category.clone(),
                division: r.petition.location.division.to_string(),
                respondent: r.petition.respondent_organ_id.as_ref().map(|o| o.to_string()),
                standing: Standing::Open,
            };
            let value = serde_json::to_vec(&entry).expect("serializes");
            for pk in &r.petitioner_keys {
                batch.insert(key(pk, e.case_id.as_str()), value.clone());
            }
            batch.insert(case_key(e.case_id.as_str()), serde_json::to_vec(&r.petitioner_keys).expect("serializes"));
            None
        }
        "terminated" | "rereview_replied" => Some(Standing::Terminated),
        "closed" | "rejected" | "forwarded" => Some(Standing::Done),
        _ => return Outcome::Done,
    };
    if let Some(standing) = standing {
        let keys: Vec<String> = match projection.tree().get(case_key(e.case_id.as_str())) {
            Ok(Some(v)) => serde_json::from_slice(&v).unwrap_or_default(),
            Ok(None) => return Outcome::Done,
            Err(err) => return Outcome::Retry(err.to_string()),
        };
        for pk in keys {
            let k = key(&pk, e.case_id.as_str());
            if let Ok(Some(v)) = projection.tree().get(&k) {
                if let Ok(mut entry) = serde_json::from_slice::<Entry>(&v) {
                    entry.standing = standing;
                    batch.insert(k, serde_json::to_vec(&entry).expect("serializes"));
                }
            }
        }
    }
    match projection.apply(d.seq, batch).await {
        Ok(_) => Outcome::Done,
        Err(err) => Outcome::Retry(err.to_string()),
    }
}

/// Whether an event type matters to this projection (the consumer's filter).
pub const TYPES: &[&str] =
    &["registered", "transferred_in", "terminated", "rereview_replied", "closed", "rejected", "forwarded"];
