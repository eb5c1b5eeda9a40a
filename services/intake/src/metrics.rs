//! Intake's metrics (DESIGN.md §7), registered once.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Counters and histograms of the intake service.
#[derive(Clone)]
pub struct Metrics {
    /// `xf_intake_petitions_total{channel,outcome}`: registered, replayed, refused, unavailable.
    pub petitions: IntCounterVec,
    /// `xf_intake_refusals_total{code}`: every error reply by code.
    pub refusals: IntCounterVec,
    /// `xf_intake_actions_total{action,outcome}`.
    pub actions: IntCounterVec,
    /// `xf_intake_request_duration_seconds{endpoint,transport}`.
    pub latency: HistogramVec,
    /// `xf_intake_append_conflicts_total{endpoint}`: optimistic-concurrency retries.
    pub conflicts: IntCounterVec,
    /// `xf_campaign_cases{campaign,district}` / `xf_campaign_settled{campaign,district}`:
    /// a campaign's cases and the settled ones (化解), by district.
    pub campaign_cases: IntGaugeVec,
    pub campaign_settled: IntGaugeVec,
    /// `xf_campaign_rated{campaign}` / `xf_campaign_satisfied{campaign}`: cases whose latest
    /// opinion is rated, and of them satisfied or basically satisfied.
    pub campaign_rated: IntGaugeVec,
    pub campaign_satisfied: IntGaugeVec,
    /// `xf_campaign_target_settled_rate{campaign}`.
    pub campaign_target: GaugeVec,
    /// `xf_reception_slots{year}` / `xf_reception_leaders{year}`: a year's published reception
    /// slots and the leaders who hold them.
    pub reception_slots: IntGaugeVec,
    pub reception_leaders: IntGaugeVec,
    /// `xf_reception_appointments{year,outcome}`: a year's bookings — attended, absent, pending.
    pub reception_appointments: IntGaugeVec,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let m = Self {
            petitions: IntCounterVec::new(
                Opts::new("xf_intake_petitions_total", "Petitions submitted, by channel and outcome"),
                &["channel", "outcome"],
            )
            .expect("valid"),
            refusals: IntCounterVec::new(
                Opts::new("xf_intake_refusals_total", "Error replies, by error code"),
                &["code"],
            )
            .expect("valid"),
            actions: IntCounterVec::new(
                Opts::new("xf_intake_actions_total", "Case actions, by action and outcome"),
                &["action", "outcome"],
            )
            .expect("valid"),
            latency: HistogramVec::new(
                HistogramOpts::new("xf_intake_request_duration_seconds", "Request handling time")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                &["endpoint", "transport"],
            )
            .expect("valid"),
            conflicts: IntCounterVec::new(
                Opts::new("xf_intake_append_conflicts_total", "Appends retried after a concurrent write"),
                &["endpoint"],
            )
            .expect("valid"),
            campaign_cases: IntGaugeVec::new(
                Opts::new("xf_campaign_cases", "Cases marked for a campaign, by district"),
                &["campaign", "district"],
            )
            .expect("valid"),
            campaign_settled: IntGaugeVec::new(
                Opts::new("xf_campaign_settled", "A campaign's settled cases (化解), by district"),
                &["campaign", "district"],
            )
            .expect("valid"),
            campaign_rated: IntGaugeVec::new(
                Opts::new("xf_campaign_rated", "A campaign's cases whose latest opinion is rated"),
                &["campaign"],
            )
            .expect("valid"),
            campaign_satisfied: IntGaugeVec::new(
                Opts::new("xf_campaign_satisfied", "A campaign's rated cases satisfied or basically satisfied"),
                &["campaign"],
            )
            .expect("valid"),
            campaign_target: GaugeVec::new(
                Opts::new("xf_campaign_target_settled_rate", "A campaign's target settled rate"),
                &["campaign"],
            )
            .expect("valid"),
            reception_slots: IntGaugeVec::new(
                Opts::new("xf_reception_slots", "Leaders' reception slots published, by year"),
                &["year"],
            )
            .expect("valid"),
            reception_leaders: IntGaugeVec::new(
                Opts::new("xf_reception_leaders", "Leaders holding reception slots, by year"),
                &["year"],
            )
            .expect("valid"),
            reception_appointments: IntGaugeVec::new(
                Opts::new("xf_reception_appointments", "Reception bookings by year and what became of them"),
                &["year", "outcome"],
            )
            .expect("valid"),
        };
        for channel in xinfang_shared::petition::Channel::ALL {
            for outcome in ["registered", "replayed"] {
                m.petitions.with_label_values(&[channel.as_str(), outcome]);
            }
        }
        for outcome in ["refused", "unavailable"] {
            m.petitions.with_label_values(&["unknown", outcome]);
        }
        registry.register(Box::new(m.petitions.clone())).expect("register");
        for code in xinfang_shared::error::ErrorCode::ALL {
            m.refusals.with_label_values(&[code.as_str()]);
        }
        registry.register(Box::new(m.refusals.clone())).expect("register");
        registry.register(Box::new(m.actions.clone())).expect("register");
        registry.register(Box::new(m.latency.clone())).expect("register");
        registry.register(Box::new(m.conflicts.clone())).expect("register");
        registry.register(Box::new(m.campaign_cases.clone())).expect("register");
        registry.register(Box::new(m.campaign_settled.clone())).expect("register");
        registry.register(Box::new(m.campaign_rated.clone())).expect("register");
        registry.register(Box::new(m.campaign_satisfied.clone())).expect("register");
        registry.register(Box::new(m.campaign_target.clone())).expect("register");
        registry.register(Box::new(m.reception_slots.clone())).expect("register");
        registry.register(Box::new(m.reception_leaders.clone())).expect("register");
        registry.register(Box::new(m.reception_appointments.clone())).expect("register");
        m
    }
}
