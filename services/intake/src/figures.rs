//! The campaign and reception figures as metrics for the dashboards (the city dashboard shows
//! them for every district): recomputed from the agenda and the cases' events every
//! [`EVERY`] and soon after the agenda changes, and a campaign's whenever its page is read.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use chrono::Datelike;
use xinfang_shared::campaign::{Campaign, Progress};
use xinfang_shared::error::ApiError;
use xinfang_shared::reception::{self, Reception};
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

/// Recomputes every figure once.
pub async fn refresh(intake: &Intake) -> Result<(), ApiError> {
    for c in intake.agenda.campaigns().await.map_err(unavailable)? {
        let histories = intake.marked_cases(&c.campaign_id).await?;
        let progress = xinfang_shared::campaign::progress(histories.iter().map(Vec::as_slice));
        set_campaign(&intake.metrics, &c, &progress);
    }
    let slots = intake.agenda.slots().await.map_err(unavailable)?;
    let mut by_year: BTreeMap<i32, Vec<SlotRecords>> = BTreeMap::new();
    for slot in &slots {
        let mut records = Vec::new();
        for (appointment, _, case) in &slot.bookings {
            let events = intake.ledger.events(case).await.map_err(unavailable)?;
            records.push(record_of(&events, appointment).map(|(attended, _, _)| attended));
        }
        by_year.entry(slot.reception.starts_at.year()).or_default().push((&slot.reception, records));
    }
    let m = &intake.metrics;
    for (year, of_year) in by_year {
        let f = reception::figures(of_year.iter().map(|(r, records)| (*r, records.as_slice())));
        let year = year.to_string();
        m.reception_slots.with_label_values(&[&year]).set(f.slots as i64);
        m.reception_leaders.with_label_values(&[&year]).set(f.leaders as i64);
        for (outcome, n) in [("attended", f.attended), ("absent", f.absent), ("pending", f.pending)] {
            m.reception_appointments.with_label_values(&[&year, outcome]).set(n as i64);
        }
    }
    Ok(())
}

/// Recomputes the figures every [`EVERY`] until `shutdown`.
pub async fn run(intake: Arc<Intake>, shutdown: CancellationToken) {
    loop {
        if let Err(e) = refresh(&intake).await {
            tracing::warn!(error = %e.message, "campaign and reception figures not refreshed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
            _ = intake.figures_due.notified() => {}
        }
    }
}
