//! The city view (市级视图), pure: the campaign and reception figures a node reports to its
//! parent, so the city office sees every district's on one page. A report holds counts and
//! rates, the campaigns' names and the leaders' names (public officials, as the bureau
//! publishes them) — never a case, a petitioner or a title.
//!
//! A district sends its report through its outbox (`xf.<district>.out.<city>.figures`) when
//! it changes; the city reads the latest per district from its inbox (one direct get of the
//! last message of each subject), so the view keeps working, a little stale, while a link is
//! cut.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::campaign::{Campaign, Progress};
use crate::ids::NodeCode;
use crate::reception::Figures;
use crate::time::Instant;

/// The `kind` of the outbox message (`xf.<from>.out.<to>.figures`).
pub const FIGURES: &str = "figures";

/// One campaign's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignFigures {
    pub campaign: Campaign,
    pub progress: Progress,
}

/// A node's figures as of `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub node: NodeCode,
    pub name: String,
    pub at: Instant,
    pub campaigns: Vec<CampaignFigures>,
    /// By year of the slots.
    pub receptions: BTreeMap<String, Figures>,
}

impl Report {
    /// The report's message id: its content without the time it was made, so an unchanged
    /// report sent again is one message.
    pub fn id(&self) -> String {
        let content = serde_json::to_vec(&(&self.node, &self.name, &self.campaigns, &self.receptions))
            .expect("reports serialize");
        format!("figures:{}:{}", self.node, &hex::encode(Sha256::digest(content))[..16])
    }
}

/// The reports to show: this node's first, then the others by node code; a report whose
/// subject names another sender than its `node` counts as the sender's (no node speaks for
/// another).
pub fn view(own: Report, received: Vec<(NodeCode, Report)>) -> Vec<Report> {
    let mut others: BTreeMap<NodeCode, Report> = BTreeMap::new();
    for (sender, mut report) in received {
        if sender == own.node {
            continue;
        }
        report.node = sender.clone();
        others.insert(sender, report);
    }
    std::iter::once(own).chain(others.into_values()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn report(node: &str, at_day: u32, slots: u64) -> Report {
        let figures = Figures { slots, ..Default::default() };
        Report {
            node: NodeCode::parse(node).unwrap(),
            name: "滨湖区".into(),
            at: fixtures::at(at_day, 9),
            campaigns: vec![],
            receptions: [("2026".to_string(), figures)].into(),
        }
    }

    #[test]
    fn an_unchanged_report_keeps_its_id_and_a_sender_speaks_only_for_itself() {
        assert_eq!(report("320211", 1, 2).id(), report("320211", 5, 2).id(), "the time is not content");
        assert_ne!(report("320211", 1, 2).id(), report("320211", 1, 3).id());
        let own = report("320200", 1, 0);
        let forged = report("320213", 1, 9);
        let v = view(
            own,
            vec![
                (NodeCode::parse("320211").unwrap(), forged),
                (NodeCode::parse("320200").unwrap(), report("320200", 1, 5)),
            ],
        );
        let nodes: Vec<&str> = v.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(nodes, ["320200", "320211"]);
        assert_eq!(v[0].receptions["2026"].slots, 0, "its own figures, not one sent in its name");
    }
}
