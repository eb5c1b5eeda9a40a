//! Jurisdiction routing (属地管理、分级负责，谁主管、谁负责; DESIGN.md §4, DOMAIN.md
//! "Routing"), as pure code: given a petition, the node's rules and what happened to the case
//! so far, which organ gets it — or which node — and why, in words an operator can check.

use crate::config::{Organ, OrganRole, Rule, Settings, Whereabouts};
use crate::event::RouteMode;
use crate::ids::{NodeCode, OrganId};
use crate::petition::{Kind, Petition};

/// Declines after which a case goes to the petition bureau for manual assignment.
pub const MAX_DECLINES: usize = 2;

/// Categories that are litigation-related (涉法涉诉) by default: → the 政法 organ.
pub const LITIGATION_CATEGORIES: &[&str] = &["political_legal", "litigation"];
/// Categories of misconduct reports in the discipline organs' remit: → 纪检监察.
pub const DISCIPLINE_CATEGORIES: &[&str] = &["discipline"];

/// Where a case goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// 转送/交办 to an organ of this node.
    Assign {
        organ_id: OrganId,
        organ_name: String,
        level: String,
        mode: RouteMode,
        /// For 交办: days until the report is due.
        assigned_days: Option<u32>,
        rule_id: String,
        reason: String,
        /// Which kind of result, for metrics: `assigned` or `fallback`.
        result: &'static str,
    },
    /// 属地: the matter lies in another node's area (or the nodes dispute it: the parent).
    Forward {
        to_node: NodeCode,
        reason: String,
        /// The organ there that should take it, when known (review one level up).
        organ_id: Option<OrganId>,
    },
}

/// What the router knows about the case besides the petition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Organs that declined the case (jurisdiction_declined), oldest first.
    pub declined: Vec<OrganId>,
    /// The organ suggested by the latest decline.
    pub suggested: Option<OrganId>,
    /// Nodes the case was transferred in from, oldest first.
    pub came_from: Vec<NodeCode>,
    /// The organ the sending node named when it transferred the case here.
    pub named: Option<OrganId>,
    /// The organ handling the open case this petition repeats (Art. 19 ¶3).
    pub repeat_organ: Option<OrganId>,
}

/// The administrative level of a node from its GB/T 2260 code.
pub fn level_of(node: &str) -> &'static str {
    if node.ends_with("0000") {
        "province"
    } else if node.ends_with("00") {
        "city"
    } else {
        "county"
    }
}

/// The router over one node file.
pub struct Router<'a> {
    settings: &'a Settings,
}

impl<'a> Router<'a> {
    /// A router over `settings` (already checked at load).
    pub fn new(settings: &'a Settings) -> Self {
        Self { settings }
    }

    fn organ(&self, id: &str) -> Option<&'a Organ> {
        self.settings.organs.iter().find(|o| o.id == id)
    }

    fn local(&self, role: OrganRole) -> Option<&'a Organ> {
        self.settings.organs.iter().find(|o| o.role == role && o.node == self.settings.node.code)
    }

    fn bureau(&self) -> &'a Organ {
        self.local(OrganRole::PetitionBureau).expect("checked at load: one petition bureau")
    }

    fn assign(
        &self,
        organ: &Organ,
        rule: Option<&Rule>,
        rule_id: &str,
        reason: String,
        result: &'static str,
    ) -> Decision {
        let (mode, assigned_days) = match rule {
            Some(r) if r.mode == "assign" => (RouteMode::Assign, r.assigned_days),
            _ => (RouteMode::Transfer, None),
        };
        Decision::Assign {
            organ_id: OrganId::parse(&organ.id).expect("checked at load"),
            organ_name: organ.name.clone(),
            level: level_of(&organ.node).to_string(),
            mode,
            assigned_days,
            rule_id: rule_id.to_string(),
            reason,
            result,
        }
    }

    /// The rules that match, most specific first: longest division prefix, then a rule that
    /// names the category, then one that names the kind, then file order.
    pub fn matching_rules(&self, p: &Petition) -> Vec<&'a Rule> {
        let mut rules: Vec<(usize, &'a Rule)> = self
            .settings
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| p.location.division.is_within(&r.division_prefix))
            .filter(|(_, r)| r.categories.is_empty() || r.categories.contains(&p.category))
            .filter(|(_, r)| r.kinds.is_empty() || r.kinds.iter().any(|k| k == p.kind.as_str()))
            .collect();
        rules.sort_by_key(|(i, r)| {
            (std::cmp::Reverse(r.division_prefix.len()), r.categories.is_empty(), r.kinds.is_empty(), *i)
        });
        rules.into_iter().map(|(_, r)| r).collect()
    }

    /// Decides where a case goes. A repeat of an open case goes to the organ already handling
    /// it (Art. 19 ¶3) when the rules would send it elsewhere.
    pub fn route(&self, p: &Petition, h: &History) -> Decision {
        let decision = self.route_by_rules(p, h);
        let Decision::Assign { organ_id, .. } = &decision else { return decision };
        let handling = h.repeat_organ.as_ref().filter(|r| *r != organ_id).and_then(|r| self.organ(r.as_str()));
        let me = &self.settings.node.code;
        let accused = |o: &Organ| {
            p.kind == Kind::ComplaintReport && p.respondent_organ_id.as_ref().is_some_and(|r| r.as_str() == o.id)
        };
        match handling.filter(|o| o.node == *me && !accused(o) && !h.declined.iter().any(|d| d.as_str() == o.id)) {
            Some(o) => self.assign(
                o,
                None,
                "repeat",
                format!("同一事项正在办理中，转原承办机关{}（条例第十九条）", o.name),
                "assigned",
            ),
            None => decision,
        }
    }

    fn route_by_rules(&self, p: &Petition, h: &History) -> Decision {
        let me = &self.settings.node.code;
        // 属地: a matter in a peer's area goes there, unless the nodes already passed it
        // between them, which is a dispute for their common parent (Art. 24)
        if let Some(Whereabouts::Peer(peer)) = self.settings.whereabouts(&p.location.division) {
            let disputed = h.came_from.iter().any(|n| n == &peer);
            return match (&self.settings.node.parent, disputed) {
                (Some(parent), true) => Decision::Forward {
                    organ_id: None,
                    to_node: NodeCode::parse(parent).expect("checked at load"),
                    reason: format!(
                        "事发地 {} 属 {peer} 管辖，但该案已由 {peer} 转来，两地管辖有争议，报共同上级 {parent} 协调",
                        p.location.division
                    ),
                },
                _ => {
                    let name = self.settings.peers.iter().find(|x| x.code == peer.as_str()).map(|x| x.name.as_str());
                    Decision::Forward {
                        organ_id: None,
                        to_node: peer.clone(),
                        reason: format!(
                            "属地管理：事发地 {} 属{}（{peer}）管辖",
                            p.location.division,
                            name.unwrap_or("相邻节点")
                        ),
                    }
                }
            };
        }
        let bureau = self.bureau();
        let respondent = p.respondent_organ_id.as_ref().map(|r| r.as_str());
        let accused = |o: &Organ| p.kind == Kind::ComplaintReport && respondent == Some(o.id.as_str());
        let declined = |o: &Organ| h.declined.iter().any(|d| d.as_str() == o.id);
        // a report never goes to the organ it is about (Art. 30 ¶3)
        let allowed = |o: &Organ| !declined(o) && !accused(o);
        if h.declined.len() >= MAX_DECLINES {
            if accused(bureau) {
                return self.confidential(bureau, &allowed);
            }
            return self.assign(
                bureau,
                None,
                "declined_twice",
                format!("已被 {} 个机关退回，由{}人工交办", h.declined.len(), bureau.name),
                "fallback",
            );
        }
        let local_allowed = |id: &OrganId| self.organ(id.as_str()).filter(|o| allowed(o) && o.node == *me);
        if let Some(o) = h.named.as_ref().and_then(local_allowed) {
            return self.assign(o, None, "named", format!("转来节点指定由{}办理", o.name), "assigned");
        }
        if let Some(s) =
            h.suggested.as_ref().and_then(|s| self.organ(s.as_str())).filter(|o| allowed(o) && o.node == *me)
        {
            return self.assign(s, None, "suggested", format!("原承办机关退回并建议由{}办理", s.name), "assigned");
        }
        if LITIGATION_CATEGORIES.contains(&p.category.as_str()) {
            if let Some(o) = self.local(OrganRole::PoliticalLegal).filter(|o| allowed(o)) {
                return self.assign(
                    o,
                    None,
                    "litigation",
                    format!("涉法涉诉事项，依法转{}（条例第二十二条）", o.name),
                    "assigned",
                );
            }
        }
        if p.kind == Kind::ComplaintReport && DISCIPLINE_CATEGORIES.contains(&p.category.as_str()) {
            if let Some(o) = self.local(OrganRole::Discipline).filter(|o| allowed(o)) {
                return self.assign(
                    o,
                    None,
                    "discipline",
                    format!("属纪检监察机关受理范围的检举控告，转{}", o.name),
                    "assigned",
                );
            }
        }
        for rule in self.matching_rules(p) {
            let Some(organ) = self.organ(&rule.organ) else { continue };
            if allowed(organ) && organ.node != *me {
                // 分级负责: the competent organ sits at another level
                if let Ok(to_node) = NodeCode::parse(&organ.node) {
                    return Decision::Forward {
                        organ_id: OrganId::parse(&organ.id).ok(),
                        to_node,
                        reason: format!("规则 {}：事项由{}负责，转 {} 办理", rule.id, organ.name, organ.node),
                    };
                }
            }
            if allowed(organ) {
                return self.assign(
                    organ,
                    Some(rule),
                    &rule.id,
                    format!(
                        "规则 {}：区划 {} 开头、类别 {}{} → {}",
                        rule.id,
                        rule.division_prefix,
                        if rule.categories.is_empty() { "不限".to_string() } else { rule.categories.join("/") },
                        if rule.kinds.is_empty() {
                            String::new()
                        } else {
                            format!("、类型 {}", rule.kinds.join("/"))
                        },
                        organ.name
                    ),
                    "assigned",
                );
            }
            if accused(organ) {
                return self.confidential(organ, &allowed);
            }
        }
        if accused(bureau) {
            return self.confidential(bureau, &allowed);
        }
        self.assign(bureau, None, "fallback", format!("无匹配规则，由{}办理", bureau.name), "fallback")
    }

    /// 复查/复核: the organ one level above the previous decider; on another node, the case
    /// goes there. `named` is the organ a sending node asked for (the case came up for
    /// review). With no known superior, the node's petition bureau coordinates.
    pub fn review(&self, decider: Option<&OrganId>, named: Option<&OrganId>) -> Decision {
        let me = &self.settings.node.code;
        let reviewer = |o: &Organ| {
            self.assign(o, None, "review", format!("复查/复核由原处理机关的上一级机关{}办理", o.name), "assigned")
        };
        let fallback = |why: &str| {
            let b = self.bureau();
            self.assign(b, None, "review_fallback", format!("{why}，由{}协调", b.name), "fallback")
        };
        if let Some(n) = named {
            return match self.organ(n.as_str()).filter(|o| o.node == *me) {
                Some(o) => reviewer(o),
                None => fallback("转来的复查/复核未指明本级机关"),
            };
        }
        let Some(superior) = decider.and_then(|d| self.organ(d.as_str())).and_then(|d| d.parent.as_deref()) else {
            return fallback("未登记原处理机关的上一级机关");
        };
        let known = self.organ(superior);
        if let Some(o) = known.filter(|o| o.node == *me) {
            return reviewer(o);
        }
        // an organ id starts with its node's code (e.g. 320200-zjj)
        let node =
            known.map(|o| o.node.clone()).unwrap_or_else(|| superior.split('-').next().unwrap_or_default().into());
        match NodeCode::parse(&node) {
            Ok(to_node) => Decision::Forward {
                to_node,
                reason: format!("复查/复核由上一级机关 {superior} 办理，转 {node}"),
                organ_id: OrganId::parse(superior).ok(),
            },
            Err(_) => fallback("原处理机关的上一级机关无法确定"),
        }
    }

    /// A report about `respondent`: its discipline organ, else its superior on this node, else
    /// the bureau — never the respondent (Art. 30 ¶3). Confidentiality outranks declines; when
    /// every local candidate is the respondent, the case goes to the parent node.
    fn confidential(&self, respondent: &Organ, allowed: &dyn Fn(&Organ) -> bool) -> Decision {
        let me = &self.settings.node.code;
        let not_accused = |o: &&Organ| o.id != respondent.id;
        let superior = respondent.parent.as_deref().and_then(|p| self.organ(p)).filter(|o| o.node == *me);
        let discipline = self.local(OrganRole::Discipline);
        let target = discipline
            .filter(|o| allowed(o))
            .or(superior.filter(|o| allowed(o)))
            .or(discipline.filter(not_accused))
            .or(Some(self.bureau()).filter(not_accused));
        match (target, &self.settings.node.parent) {
            (Some(target), _) => self.assign(
                target,
                None,
                "confidential",
                format!("检举控告对象为{}，依条例第三十条不得转交被检举控告机关，转{}", respondent.name, target.name),
                "assigned",
            ),
            (None, Some(parent)) => Decision::Forward {
                organ_id: None,
                to_node: NodeCode::parse(parent).expect("checked at load"),
                reason: format!("检举控告对象为{}，本级无其他可受理机关，报上级 {parent}", respondent.name),
            },
            (None, None) => self.assign(
                self.bureau(),
                None,
                "confidential",
                "检举控告对象为本级信访局且无上级节点，由信访局登记后报送".into(),
                "fallback",
            ),
        }
    }
}

#[cfg(test)]
mod tests;
