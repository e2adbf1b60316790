//! The outbox's metrics: `orders_outbox_pending`,
//! `orders_outbox_oldest_pending_age_seconds`, `orders_outbox_published_total`,
//! `orders_outbox_publish_errors_total` and `orders_outbox_publish_delay_seconds`
//! (an event's recording → the broker's confirmation: what the outbox adds
//! to an event's way, now that a published row leaves the table).

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc, OnceLock,
};

use mesh::telemetry::metrics::{
    prometheus_client::{metrics::histogram::Histogram, registry::Unit},
    register_counter_fn, register_gauge_fn, with_registry,
};

/// Publish-delay buckets, in seconds: 1 ms … 5 min (a broker outage's
/// backlog waits minutes).
const DELAY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0,
];

/// The process's outbox counters (registered once).
#[derive(Debug)]
pub(crate) struct OutboxMetrics {
    pending: AtomicI64,
    /// Unix ms of the oldest pending row; 0 when none.
    oldest: AtomicI64,
    published: AtomicU64,
    errors: AtomicU64,
    delay: Histogram,
}

impl Default for OutboxMetrics {
    fn default() -> Self {
        Self {
            pending: AtomicI64::default(),
            oldest: AtomicI64::default(),
            published: AtomicU64::default(),
            errors: AtomicU64::default(),
            delay: Histogram::new(DELAY_BUCKETS),
        }
    }
}

impl OutboxMetrics {
    pub(crate) fn registered() -> Arc<Self> {
        static METRICS: OnceLock<Arc<OutboxMetrics>> = OnceLock::new();
        METRICS
            .get_or_init(|| {
                let metrics = Arc::new(Self::default());
                let read = metrics.clone();
                register_gauge_fn(
                    "orders_outbox_pending",
                    "Events recorded in the outbox and not yet confirmed by the broker",
                    &[],
                    move || read.pending.load(Ordering::Relaxed),
                );
                let read = metrics.clone();
                register_gauge_fn(
                    "orders_outbox_oldest_pending_age_seconds",
                    "Age of the oldest event not yet confirmed by the broker (0 when none)",
                    &[],
                    move || {
                        let oldest = read.oldest.load(Ordering::Relaxed);
                        if oldest == 0 {
                            0
                        } else {
                            (mesh::storage::now_unix_ms() - oldest).max(0) / 1000
                        }
                    },
                );
                let read = metrics.clone();
                register_counter_fn(
                    "orders_outbox_published_total",
                    "Events this instance's relay published with the broker's confirmation",
                    &[],
                    move || read.published.load(Ordering::Relaxed),
                );
                let read = metrics.clone();
                register_counter_fn(
                    "orders_outbox_publish_errors_total",
                    "Publishes of this instance's relay the broker did not confirm",
                    &[],
                    move || read.errors.load(Ordering::Relaxed),
                );
                with_registry(|registry| {
                    registry.register_with_unit(
                        "orders_outbox_publish_delay",
                        "From an event's recording (its state change's write) to the broker's confirmation of its publish by this instance's relay",
                        Unit::Seconds,
                        metrics.delay.clone(),
                    );
                });
                metrics
            })
            .clone()
    }

    pub(crate) fn backlog(&self, pending: i64, oldest_unix_ms: Option<i64>) {
        self.pending.store(pending, Ordering::Relaxed);
        self.oldest
            .store(oldest_unix_ms.unwrap_or(0), Ordering::Relaxed);
    }

    /// An event recorded `waited_ms` ago was confirmed by the broker.
    pub(crate) fn published(&self, waited_ms: i64) {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.delay.observe(waited_ms.max(0) as f64 / 1000.0);
    }

    pub(crate) fn publish_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name` (no labels) in the text exposition.
    fn sample(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_published_event_is_counted_and_its_wait_lands_in_the_delay_histogram() {
        let metrics = OutboxMetrics::registered();
        metrics.published(1_500);
        metrics.published(-3);
        let text = mesh::telemetry::metrics::encode_text();
        assert!(sample(&text, "orders_outbox_published_total") >= 2.0);
        assert!(sample(&text, "orders_outbox_publish_delay_seconds_count") >= 2.0);
        let sum = sample(&text, "orders_outbox_publish_delay_seconds_sum");
        assert!(sum >= 1.5, "a clock step back counts as no wait: {sum}");
        assert!(
            text.contains("orders_outbox_publish_delay_seconds_bucket{le=\"300\"}"),
            "{text}"
        );
    }
}
