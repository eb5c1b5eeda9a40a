//! Intake's metrics (DESIGN.md §7), registered once.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

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
        m
    }
}
