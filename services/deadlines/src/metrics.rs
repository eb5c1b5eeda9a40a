//! Deadlines' metrics (DESIGN.md §7).

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use xinfang_shared::indicators::{Count, NO_ORGAN};

/// The steps an organ answers for, whose overdue gauges exist from the start.
pub const ORGAN_STEPS: &[&str] = &["objection", "acceptance", "handling", "review", "rereview"];

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
    /// `xf_deadlines_breaches_total{step,organ}`: breaches appended, by the organ that had the step.
    pub breaches: IntCounterVec,
    /// `xf_deadlines_overdue_steps{step,organ}`: open steps past their due, from the store.
    pub overdue: IntGaugeVec,
    /// The indicator counts (`xf_deadlines_<count>_total`), in [`Count::ALL`] order, kept in the
    /// store and exported from it ([`xinfang_shared::indicators`]).
    pub counts: Vec<IntCounterVec>,
}

impl Metrics {
    /// Registers the metrics in `registry`; the series of each organ in `organs` (this node's)
    /// exist from the start, at zero, so a rate over a window sees their first increase.
    pub fn register(registry: &Registry, organs: &[String]) -> Self {
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
            breaches: IntCounterVec::new(
                Opts::new("xf_deadlines_breaches_total", "Breaches appended, by step and the organ that had it"),
                &["step", "organ"],
            )
            .expect("valid"),
            overdue: IntGaugeVec::new(
                Opts::new("xf_deadlines_overdue_steps", "Open steps past their due, by step and organ"),
                &["step", "organ"],
            )
            .expect("valid"),
            counts: Count::ALL
                .iter()
                .map(|c| {
                    let labels: &[&str] = if c.by_organ() { &["organ", "outcome"] } else { &["outcome"] };
                    IntCounterVec::new(Opts::new(format!("xf_deadlines_{}_total", c.name()), c.help()), labels)
                        .expect("valid")
                })
                .collect(),
        };
        for (count, vec) in Count::ALL.iter().zip(&m.counts) {
            for outcome in count.outcomes() {
                if count.by_organ() {
                    for organ in organs.iter().map(String::as_str).chain([NO_ORGAN]) {
                        vec.with_label_values(&[organ, outcome]);
                    }
                } else {
                    vec.with_label_values(&[outcome]);
                }
            }
            registry.register(Box::new(vec.clone())).expect("register");
        }
        for organ in organs {
            for step in ORGAN_STEPS {
                m.breaches.with_label_values(&[step, organ.as_str()]);
                m.overdue.with_label_values(&[step, organ.as_str()]);
            }
        }
        for kind in ["warned", "breached"] {
            m.lag.with_label_values(&[kind]);
        }
        registry.register(Box::new(m.breaches.clone())).expect("register");
        registry.register(Box::new(m.overdue.clone())).expect("register");
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

    /// The counter of `count`.
    pub fn count(&self, count: Count) -> &IntCounterVec {
        &self.counts[Count::ALL.iter().position(|c| *c == count).expect("every count is registered")]
    }
}
