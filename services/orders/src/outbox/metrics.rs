//! The outbox's metrics: `orders_outbox_pending`,
//! `orders_outbox_oldest_pending_age_seconds`, `orders_outbox_published_total`
//! and `orders_outbox_publish_errors_total`.

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc, OnceLock,
};

use mesh::telemetry::metrics::{register_counter_fn, register_gauge_fn};

/// The process's outbox counters (registered once).
#[derive(Debug, Default)]
pub(crate) struct OutboxMetrics {
    pending: AtomicI64,
    /// Unix ms of the oldest pending row; 0 when none.
    oldest: AtomicI64,
    published: AtomicU64,
    errors: AtomicU64,
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
                metrics
            })
            .clone()
    }

    pub(crate) fn backlog(&self, pending: i64, oldest_unix_ms: Option<i64>) {
        self.pending.store(pending, Ordering::Relaxed);
        self.oldest
            .store(oldest_unix_ms.unwrap_or(0), Ordering::Relaxed);
    }

    pub(crate) fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn publish_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}
