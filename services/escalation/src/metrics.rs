//! Escalation's metrics (DESIGN.md §7).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Counters, gauges and histograms of the escalation service.
#[derive(Clone)]
pub struct Metrics {
    /// `xf_escalation_escalations_total{level}`: rungs this node recorded.
    pub escalations: IntCounterVec,
    /// `xf_escalation_received_total{child,level}`: escalations that reached this node's inbox.
    pub received: IntCounterVec,
    /// `xf_escalation_open{child,age}`: inbox escalations not yet acknowledged nor answered.
    pub open: IntGaugeVec,
    /// `xf_escalation_ack_seconds{child}`: time from receipt to acknowledgement (or directive).
    pub ack_seconds: HistogramVec,
    /// `xf_escalation_answers_total{kind}`: acknowledgements and directives sent down.
    pub answers: IntCounterVec,
    /// `xf_escalation_answers_received_total{kind}`: answers from the parent recorded here.
    pub answers_received: IntCounterVec,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let m =
            Self {
                escalations: IntCounterVec::new(
                    Opts::new("xf_escalation_escalations_total", "Escalations recorded, by level"),
                    &["level"],
                )
                .expect("valid"),
                received: IntCounterVec::new(
                    Opts::new("xf_escalation_received_total", "Escalations received from child nodes"),
                    &["child", "level"],
                )
                .expect("valid"),
                open: IntGaugeVec::new(
                    Opts::new("xf_escalation_open", "Open escalations in the inbox, by child and age"),
                    &["child", "age"],
                )
                .expect("valid"),
                ack_seconds: HistogramVec::new(
                    HistogramOpts::new("xf_escalation_ack_seconds", "Time from receipt to the first answer")
                        .buckets(vec![60.0, 600.0, 3600.0, 4.0 * 3600.0, 86400.0, 3.0 * 86400.0, 7.0 * 86400.0]),
                    &["child"],
                )
                .expect("valid"),
                answers: IntCounterVec::new(
                    Opts::new("xf_escalation_answers_total", "Acknowledgements and directives sent to children"),
                    &["kind"],
                )
                .expect("valid"),
                answers_received: IntCounterVec::new(
                    Opts::new("xf_escalation_answers_received_total", "Answers from the parent recorded in the ledger"),
                    &["kind"],
                )
                .expect("valid"),
            };
        for level in ["reminder", "supervision", "parent"] {
            m.escalations.with_label_values(&[level]);
        }
        registry.register(Box::new(m.escalations.clone())).expect("register");
        registry.register(Box::new(m.received.clone())).expect("register");
        registry.register(Box::new(m.open.clone())).expect("register");
        registry.register(Box::new(m.ack_seconds.clone())).expect("register");
        registry.register(Box::new(m.answers.clone())).expect("register");
        registry.register(Box::new(m.answers_received.clone())).expect("register");
        m
    }
}
