//! The campaign and reception figures: as metrics for the dashboards, and as the report a
//! district sends its parent for the city view (市级视图, [`city_view`]): recomputed from the
//! agenda and the cases' events every [`EVERY`] and soon after the agenda changes (a
//! campaign's metrics also whenever its page is read), and sent up when they changed. Each
//! refresh also records on its case any seat whose booking a crash left unrecorded.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use chrono::Datelike;
use serde_json::{json, Value};
use xinfang_shared::access::{self, Caller};
use xinfang_shared::campaign::{Campaign, Progress};
use xinfang_shared::city_view::{self, CampaignFigures, Report, FIGURES};
use xinfang_shared::error::ApiError;
use xinfang_shared::event::Actor;
use xinfang_shared::ids::NodeCode;
use xinfang_shared::ledger::{headers, last_by_subject, publish_acked, Outgoing};
use xinfang_shared::reception::{self, Reception};
use xinfang_shared::subjects;
use xinfang_shared::CancellationToken;

use crate::metrics::Metrics;
use crate::receptions::record_of;
use crate::register::unavailable;
use crate::Intake;

/// How often the figures are recomputed.
pub const EVERY: Duration = Duration::from_secs(60);

/// Sets a campaign's gauges from its progress.
pub fn set_campaign(m: &Metrics, c: &Campaign, p: &Progress) {
    let id = c.campaign_id.as_str();
    for (district, t) in &p.by_district {
        m.campaign_cases.with_label_values(&[id, district]).set(t.cases as i64);
        m.campaign_settled.with_label_values(&[id, district]).set(t.settled as i64);
    }
    m.campaign_rated.with_label_values(&[id]).set(p.rated as i64);
    m.campaign_satisfied.with_label_values(&[id]).set(p.satisfied as i64);
    m.campaign_target.with_label_values(&[id]).set(c.target_settled_rate);
}

/// A slot with the record of each booking (`Some(attended)`, `None` while not recorded).
type SlotRecords<'a> = (&'a Reception, Vec<Option<bool>>);

/// Recomputes every figure once; returns the node's report (the city view).
pub async fn refresh(intake: &Intake) -> Result<Report, ApiError> {
    let mut campaigns = Vec::new();
    let mut marks = intake.marks().await?;
    for campaign in intake.agenda.campaigns().await.map_err(unavailable)? {
        let marked = marks.remove(&campaign.campaign_id).unwrap_or_default();
        let histories = intake.histories(&marked).await?;
        let progress = xinfang_shared::campaign::progress(histories.iter().map(Vec::as_slice));
        set_campaign(&intake.metrics, &campaign, &progress);
        campaigns.push(CampaignFigures { campaign, progress });
    }
    let slots = intake.agenda.slots().await.map_err(unavailable)?;
    let mut by_year: BTreeMap<i32, Vec<SlotRecords>> = BTreeMap::new();
    for slot in &slots {
        let mut records = Vec::new();
        for (appointment, _, case) in &slot.bookings {
            let events = intake.ledger.events(case).await.map_err(unavailable)?;
            // a seat taken by a process that died before recording it on the case
            intake.record_booking(slot, appointment, case, &events, Actor::system("intake")).await?;
            records.push(record_of(&events, appointment).map(|(attended, _, _)| attended));
        }
        by_year.entry(slot.reception.starts_at.year()).or_default().push((&slot.reception, records));
    }
    let m = &intake.metrics;
    let mut receptions = BTreeMap::new();
    for (year, of_year) in by_year {
        let f = reception::figures(of_year.iter().map(|(r, records)| (*r, records.as_slice())));
        let year = year.to_string();
        m.reception_slots.with_label_values(&[&year]).set(f.slots as i64);
        m.reception_leaders.with_label_values(&[&year]).set(f.leaders as i64);
        for (outcome, n) in [("attended", f.attended), ("absent", f.absent), ("pending", f.pending)] {
            m.reception_appointments.with_label_values(&[&year, outcome]).set(n as i64);
        }
        receptions.insert(year, f);
    }
    let node = intake.ledger.node().clone();
    let name = intake.settings.node.name.clone();
    Ok(Report { node, name, at: intake.clock.now(), campaigns, receptions })
}

/// Sends the report to the parent through the outbox when it changed since the last one sent
/// (an unchanged report has the same message id: sent again, it is one message).
async fn send_up(intake: &Intake, report: &Report, last_sent: &mut Option<String>) -> Result<(), String> {
    let Some(parent) = intake.settings.node.parent.as_deref().and_then(|p| NodeCode::parse(p).ok()) else {
        return Ok(());
    };
    let id = report.id();
    if last_sent.as_deref() == Some(id.as_str()) {
        return Ok(());
    }
    let message = Outgoing {
        subject: subjects::outbox(intake.ledger.node(), &parent, FIGURES),
        headers: headers(&id, FIGURES),
        payload: serde_json::to_vec(report).expect("reports serialize").into(),
    };
    publish_acked(intake.ledger.jetstream(), message).await.map_err(|e| e.to_string())?;
    *last_sent = Some(id);
    Ok(())
}

/// `GET /v1/city/figures` (`city.figures`; bureau, auditor, office): this node's figures and
/// the latest each node below it reported.
pub async fn city_view(intake: &Intake, caller: &Caller) -> Result<Value, ApiError> {
    access::may_read_agenda(caller)?;
    let own = refresh(intake).await?;
    let node = intake.ledger.node();
    let filter = format!("xf.*.out.{node}.{FIGURES}");
    let inbox = subjects::inbox_stream(node);
    let received = last_by_subject(intake.ledger.jetstream(), &inbox, &filter).await.map_err(unavailable)?;
    let reports = received
        .into_iter()
        .filter_map(|(subject, bytes)| {
            let sender = NodeCode::parse(subject.split('.').nth(1)?).ok()?;
            let report = serde_json::from_slice::<Report>(&bytes).ok()?;
            Some((sender, report))
        })
        .collect();
    Ok(json!({"ok": true, "nodes": city_view::view(own, reports)}))
}

/// Recomputes the figures every [`EVERY`] until `shutdown`.
pub async fn run(intake: Arc<Intake>, shutdown: CancellationToken) {
    let mut last_sent = None;
    loop {
        match refresh(&intake).await {
            Ok(report) => {
                if let Err(e) = send_up(&intake, &report, &mut last_sent).await {
                    tracing::warn!(error = %e, "figures not sent to the parent; retried at the next refresh");
                }
            }
            Err(e) => tracing::warn!(error = %e.message, "campaign and reception figures not refreshed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
            _ = intake.figures_due.notified() => {}
        }
    }
}
