//! Subject and stream names (DESIGN.md §3, §5, §6). Built in one place so no service spells
//! them differently.

use crate::ids::{CaseId, NodeCode};

/// `XF_CASES_N` — the node's case ledger.
pub fn case_stream(node: &NodeCode) -> String {
    format!("XF_CASES_{node}")
}

/// `XF_OUTBOX_N` — what this node owes other nodes.
pub fn outbox_stream(node: &NodeCode) -> String {
    format!("XF_OUTBOX_{node}")
}

/// `XF_INBOX_N` — what other nodes sent this one (sourced).
pub fn inbox_stream(node: &NodeCode) -> String {
    format!("XF_INBOX_{node}")
}

/// `xf.N.case.>` — every case event of the node.
pub fn case_events(node: &NodeCode) -> String {
    format!("xf.{node}.case.>")
}

/// `xf.N.case.<case_id>.<type>` — one event.
pub fn case_event(node: &NodeCode, case: &CaseId, kind: &str) -> String {
    format!("xf.{node}.case.{case}.{kind}")
}

/// The case id in a case event's subject (`xf.N.case.<case_id>.<type>`), unchecked.
pub fn case_of(subject: &str) -> Option<&str> {
    let mut parts = subject.splitn(5, '.');
    let (Some("xf"), Some(_), Some("case"), Some(case), Some(_)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some(case)
}

/// `xf.N.case.<case_id>.*` — all events of one case (the optimistic-concurrency scope).
pub fn case_filter(node: &NodeCode, case: &CaseId) -> String {
    format!("xf.{node}.case.{case}.*")
}

/// `xf.N.case.*.<type>` — one event type across cases.
pub fn case_type_filter(node: &NodeCode, kind: &str) -> String {
    format!("xf.{node}.case.*.{kind}")
}

/// `xf.<from>.out.<to>.<kind>` — a cross-node message.
pub fn outbox(from: &NodeCode, to: &NodeCode, kind: &str) -> String {
    format!("xf.{from}.out.{to}.{kind}")
}

/// `xf.N.out.>` — the node's outbox subjects.
pub fn outbox_subjects(node: &NodeCode) -> String {
    format!("xf.{node}.out.>")
}

/// `xf.N.api.<endpoint>` — intake's request/reply endpoints (`petition.submit`, `case.get`, …).
pub fn api(node: &NodeCode, endpoint: &str) -> String {
    format!("xf.{node}.api.{endpoint}")
}

/// `XF_AUDIT_<node>`: the node's record of staff reads of personal data (never sourced out).
pub fn audit_stream(node: &NodeCode) -> String {
    format!("XF_AUDIT_{node}")
}

/// `xf.<node>.audit.<what>`: one audit record.
pub fn audit(node: &NodeCode, what: &str) -> String {
    format!("xf.{node}.audit.{what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_event_subject_names_its_case() {
        let n = NodeCode::parse("320211").unwrap();
        let case = CaseId::parse("320211-20261127-000042").unwrap();
        assert_eq!(case_of(&case_event(&n, &case, "routed")), Some(case.as_str()));
        assert_eq!(case_of("xf.320211.agenda.x"), None);
        assert_eq!(case_of("xf.320211.case.only"), None);
    }

    #[test]
    fn names_match_the_design() {
        let n = NodeCode::parse("320211").unwrap();
        let c = CaseId::parse("320211-20261127-000042").unwrap();
        assert_eq!(case_event(&n, &c, "registered"), "xf.320211.case.320211-20261127-000042.registered");
        assert_eq!(case_filter(&n, &c), "xf.320211.case.320211-20261127-000042.*");
        assert_eq!(case_stream(&n), "XF_CASES_320211");
        assert_eq!(outbox(&n, &NodeCode::parse("320200").unwrap(), "escalation"), "xf.320211.out.320200.escalation");
        assert_eq!(api(&n, "petition.submit"), "xf.320211.api.petition.submit");
    }
}
