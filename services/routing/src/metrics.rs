//! Routing's metrics (DESIGN.md §7).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// Counters and histograms of the routing service.
#[derive(Clone)]
pub struct Metrics {
    /// `xf_routing_routed_total{result}`: assigned, forwarded, fallback.
    pub routed: IntCounterVec,
    /// `xf_routing_reroutes_total{cause}`: routing again after a decline or a review request.
    pub reroutes: IntCounterVec,
    /// `xf_routing_route_latency_seconds`: registered → routed/forwarded, ledger time.
    pub latency: Histogram,
    /// `xf_routing_rule_reloads_total{result}`: ok, refused.
    pub reloads: IntCounterVec,
    /// `xf_routing_duplicates_skipped_total`: redeliveries already routed.
    pub skipped: IntCounter,
    /// `xf_routing_case_reads_total{why}`: events routed on the case's whole history rather
    /// than on a `registered` event alone — `case_changed` (something was written to the case
    /// first), `forward` (a forward writes twice), `not_registered` (a decline, a transfer, a
    /// review request).
    pub case_reads: IntCounterVec,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let m = Self {
            routed: IntCounterVec::new(Opts::new("xf_routing_routed_total", "Cases routed, by result"), &["result"])
                .expect("valid"),
            reroutes: IntCounterVec::new(
                Opts::new("xf_routing_reroutes_total", "Cases routed again, by cause"),
                &["cause"],
            )
            .expect("valid"),
            latency: Histogram::with_opts(
                HistogramOpts::new("xf_routing_route_latency_seconds", "Registration to routing decision")
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0]),
            )
            .expect("valid"),
            reloads: IntCounterVec::new(
                Opts::new("xf_routing_rule_reloads_total", "Rule reloads, by result"),
                &["result"],
            )
            .expect("valid"),
            skipped: IntCounter::new("xf_routing_duplicates_skipped_total", "Redeliveries of events already routed")
                .expect("valid"),
            case_reads: IntCounterVec::new(
                Opts::new("xf_routing_case_reads_total", "Events routed on a read of the case's history, by why"),
                &["why"],
            )
            .expect("valid"),
        };
        for result in ["assigned", "forwarded", "fallback"] {
            m.routed.with_label_values(&[result]);
        }
        for why in ["case_changed", "forward", "not_registered"] {
            m.case_reads.with_label_values(&[why]);
        }
        registry.register(Box::new(m.routed.clone())).expect("register");
        registry.register(Box::new(m.reroutes.clone())).expect("register");
        registry.register(Box::new(m.latency.clone())).expect("register");
        registry.register(Box::new(m.reloads.clone())).expect("register");
        registry.register(Box::new(m.skipped.clone())).expect("register");
        registry.register(Box::new(m.case_reads.clone())).expect("register");
        m
    }
}
