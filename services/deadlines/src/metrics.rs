//! Deadlines' metrics (DESIGN.md §7).

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Gauges, counters and histograms of the deadlines service.
#[derive(Clone)]
pub struct Metrics {
    /// `xf_deadlines_armed_timers{step}`: open steps with a timer.
    pub armed: IntGaugeVec,
    /// `xf_deadlines_fired_total{step,kind}`: warned, breached, closed.
    pub fired: IntCounterVec,
    /// `xf_deadlines_firing_lag_seconds{kind}`: fired time − due time.
    pub lag: HistogramVec,
    /// `xf_deadlines_provisional_timers{step}`: armed with a due in a year without a schedule.
    pub provisional: IntGaugeVec,
    /// `xf_deadlines_recomputed_total{step}`: provisional dues moved by a new calendar.
    pub recomputed: IntCounterVec,
    /// `xf_deadlines_calendar_reloads_total{result}`: applied or refused calendar changes.
    pub calendar_reloads: IntCounterVec,
    /// `xf_deadlines_store_rebuilds_total`: new or lost stores rebuilt from the ledger in one read.
    pub rebuilds: IntCounter,
    /// `xf_deadlines_rebuilt_events_total`: ledger events those rebuilds read.
    pub rebuilt_events: IntCounter,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let m = Self {
            armed: IntGaugeVec::new(Opts::new("xf_deadlines_armed_timers", "Open steps with a timer"), &["step"])
                .expect("valid"),
            fired: IntCounterVec::new(
                Opts::new("xf_deadlines_fired_total", "Timers fired, by step and kind"),
                &["step", "kind"],
            )
            .expect("valid"),
            lag: HistogramVec::new(
                HistogramOpts::new("xf_deadlines_firing_lag_seconds", "Fired time minus due time")
                    .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 3600.0, 86400.0]),
                &["kind"],
            )
            .expect("valid"),
            provisional: IntGaugeVec::new(
                Opts::new(
                    "xf_deadlines_provisional_timers",
                    "Timers whose due lies in a year with no holiday schedule",
                ),
                &["step"],
            )
            .expect("valid"),
            recomputed: IntCounterVec::new(
                Opts::new("xf_deadlines_recomputed_total", "Provisional dues moved by a newly loaded calendar"),
                &["step"],
            )
            .expect("valid"),
            calendar_reloads: IntCounterVec::new(
                Opts::new("xf_deadlines_calendar_reloads_total", "Calendar changes picked up, by result"),
                &["result"],
            )
            .expect("valid"),
            rebuilds: IntCounter::new(
                "xf_deadlines_store_rebuilds_total",
                "New or lost timer stores rebuilt from the ledger in one sequential read",
            )
            .expect("valid"),
            rebuilt_events: IntCounter::new(
                "xf_deadlines_rebuilt_events_total",
                "Ledger events read by store rebuilds",
            )
            .expect("valid"),
        };
        registry.register(Box::new(m.rebuilds.clone())).expect("register");
        registry.register(Box::new(m.rebuilt_events.clone())).expect("register");
        registry.register(Box::new(m.recomputed.clone())).expect("register");
        registry.register(Box::new(m.calendar_reloads.clone())).expect("register");
        registry.register(Box::new(m.armed.clone())).expect("register");
        registry.register(Box::new(m.fired.clone())).expect("register");
        registry.register(Box::new(m.lag.clone())).expect("register");
        registry.register(Box::new(m.provisional.clone())).expect("register");
        m
    }
}
