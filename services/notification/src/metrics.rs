//! Notification's metrics (DESIGN.md §7). Labels never carry personal data.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// Counters and gauges of the notification service.
#[derive(Clone)]
pub struct Metrics {
    /// `xf_notification_notices_total{template,channel,result}`: delivered, failed, skipped.
    pub notices: IntCounterVec,
    /// `xf_notification_attempts_total{channel,result}`: every try, ok or error.
    pub attempts: IntCounterVec,
    /// `xf_notification_outbox_depth`: notices waiting for delivery.
    pub depth: IntGauge,
    /// `xf_notification_oldest_undelivered_seconds`: age of the oldest waiting notice.
    pub oldest: IntGauge,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let m = Self {
            notices: IntCounterVec::new(
                Opts::new("xf_notification_notices_total", "Notices by template, channel and result"),
                &["template", "channel", "result"],
            )
            .expect("valid"),
            attempts: IntCounterVec::new(
                Opts::new("xf_notification_attempts_total", "Delivery attempts by channel and result"),
                &["channel", "result"],
            )
            .expect("valid"),
            depth: IntGauge::new("xf_notification_outbox_depth", "Notices waiting for delivery").expect("valid"),
            oldest: IntGauge::new("xf_notification_oldest_undelivered_seconds", "Age of the oldest waiting notice")
                .expect("valid"),
        };
        registry.register(Box::new(m.notices.clone())).expect("register");
        for channel in crate::channels::NAMES {
            for result in ["ok", "error"] {
                m.attempts.with_label_values(&[channel, result]);
            }
        }
        registry.register(Box::new(m.attempts.clone())).expect("register");
        registry.register(Box::new(m.depth.clone())).expect("register");
        registry.register(Box::new(m.oldest.clone())).expect("register");
        m
    }
}
