//! Campaigns on intake (攻坚化解, DESIGN.md §14): the bureau opens one (agenda stream), marks
//! cases as part of it (`campaign_marked` on each case, so the mark is in the case's own
//! history), and reads its progress — computed from the marked cases' events
//! ([`xinfang_shared::campaign::progress`]).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use xinfang_shared::access::{self, Caller};
use xinfang_shared::campaign::{self, Campaign};
use xinfang_shared::error::{ApiError, ErrorCode};
use xinfang_shared::event::{Envelope, EventData};
use xinfang_shared::ids::CaseId;
use xinfang_shared::ledger::Expect;
use xinfang_shared::petition::Obj;
use xinfang_shared::subjects;

use crate::register::unavailable;
use crate::Intake;

/// The most cases one request marks.
const MAX_MARK: usize = 500;

impl Intake {
    /// `POST /v1/campaigns` (bureau).
    pub async fn open_campaign(&self, caller: &Caller, body: &Value) -> Result<Value, ApiError> {
        access::may_keep_agenda(caller)?;
        let c = campaign::parse(body, self.ledger.node())?;
        self.agenda.open_campaign(&c, caller.staff()?.as_staff(), self.clock.now()).await.map_err(unavailable)?;
        Ok(json!({"ok": true, "campaign_id": c.campaign_id}))
    }

    async fn campaign(&self, id: &str) -> Result<Campaign, ApiError> {
        self.agenda
            .campaigns()
            .await
            .map_err(unavailable)?
            .into_iter()
            .find(|c| c.campaign_id == id)
            .ok_or_else(|| ApiError::general(ErrorCode::NotFound, format!("no campaign {id} at this node")))
    }

    /// `POST /v1/campaigns/{id}/cases` (bureau): marks `case_ids` as part of the campaign; a
    /// case already marked stays as it is.
    pub async fn mark_cases(&self, caller: &Caller, id: &str, body: &Value) -> Result<Value, ApiError> {
        access::may_keep_agenda(caller)?;
        let obj = Obj::root(body)?;
        obj.only(&["case_ids"])?;
        let items = obj.array("case_ids", 1, MAX_MARK)?;
        let mut cases = Vec::new();
        for (i, v) in items.iter().enumerate() {
            let field = format!("case_ids[{i}]");
            let case = v
                .as_str()
                .and_then(|s| CaseId::parse(s).ok())
                .ok_or_else(|| ApiError::field(ErrorCode::InvalidField, &field, "must be a case id"))?;
            cases.push((field, case));
        }
        let c = self.campaign(id).await?;
        let actor = caller.staff()?.as_staff();
        let (mut marked, mut already) = (0, 0);
        // every case is checked before any is marked: a typo marks nothing
        let mut histories = Vec::new();
        for (field, case) in &cases {
            let events = self.ledger.events(case).await.map_err(unavailable)?;
            if events.is_empty() {
                return Err(ApiError::field(ErrorCode::NotFound, field, format!("no case {case} at this node")));
            }
            histories.push(events);
        }
        for ((_, case), events) in cases.iter().zip(histories) {
            let event_id = format!("{}:{case}:campaign_marked", c.campaign_id);
            if events.iter().any(|e| e.event_id == event_id) {
                already += 1;
                continue;
            }
            let now = self.clock.now();
            let at = now.max(events.last().map_or(now, |e| e.at));
            let data = EventData::CampaignMarked { campaign_id: c.campaign_id.clone(), name: c.name.clone() };
            let event =
                Envelope::new(event_id, case.clone(), self.ledger.node().clone(), at, actor.clone(), None, data);
            self.ledger.append(&event, Expect::Any).await.map_err(unavailable)?;
            marked += 1;
        }
        Ok(json!({"ok": true, "marked": marked, "already": already}))
    }

    /// The cases marked for each campaign, in the order they were marked (one read of every
    /// `campaign_marked` of the node).
    pub(crate) async fn marks(&self) -> Result<BTreeMap<String, Vec<CaseId>>, ApiError> {
        let marks = self
            .ledger
            .read_filtered(subjects::case_type_filter(self.ledger.node(), "campaign_marked"))
            .await
            .map_err(unavailable)?;
        let mut by_campaign: BTreeMap<String, Vec<CaseId>> = BTreeMap::new();
        for m in marks {
            if let Ok(Some(EventData::CampaignMarked { campaign_id, .. })) = m.event.data() {
                let cases = by_campaign.entry(campaign_id.clone()).or_default();
                if !cases.contains(&m.event.case_id) {
                    cases.push(m.event.case_id);
                }
            }
        }
        Ok(by_campaign)
    }

    /// The histories of `cases`.
    pub(crate) async fn histories(&self, cases: &[CaseId]) -> Result<Vec<Vec<Envelope>>, ApiError> {
        let mut out = Vec::new();
        for case in cases {
            out.push(self.ledger.events(case).await.map_err(unavailable)?);
        }
        Ok(out)
    }

    /// `GET /v1/campaigns/{id}` (bureau, auditor, office): the campaign and its progress.
    pub async fn campaign_view(&self, caller: &Caller, id: &str) -> Result<Value, ApiError> {
        access::may_read_agenda(caller)?;
        let c = self.campaign(id).await?;
        let marked = self.marks().await?.remove(id).unwrap_or_default();
        let histories = self.histories(&marked).await?;
        let progress = campaign::progress(histories.iter().map(Vec::as_slice));
        crate::figures::set_campaign(&self.metrics, &c, &progress);
        let cases: Vec<Value> = histories
            .iter()
            .filter_map(|events| {
                let state = xinfang_shared::state::CaseState::fold(events)?;
                let title = xinfang_shared::transfer::registered_of(events).map(|r| r.petition.title.clone());
                Some(json!({
                    "case_id": state.case_id,
                    "title": title,
                    "state": state.stage.as_str(),
                    "state_label": state.stage.label_zh(),
                    "leader": campaign::leader_of(events),
                    "settled": campaign::settled(events),
                }))
            })
            .collect();
        Ok(json!({"ok": true, "campaign": c, "progress": progress, "cases": cases}))
    }

    /// `GET /v1/campaigns` (bureau, auditor, office): every campaign of the node.
    pub async fn campaign_list(&self, caller: &Caller) -> Result<Value, ApiError> {
        access::may_read_agenda(caller)?;
        let campaigns = self.agenda.campaigns().await.map_err(unavailable)?;
        Ok(json!({"ok": true, "campaigns": campaigns}))
    }
}
