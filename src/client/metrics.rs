//! Per-target client counters (exported to Prometheus by the telemetry module).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

/// Counters of one target service, shared by every clone of its channel.
#[derive(Debug, Clone, Default)]
pub struct TargetMetrics {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    ejections: AtomicU64,
    endpoints: AtomicU64,
}

/// A point-in-time copy of [`TargetMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetCounts {
    /// Calls started.
    pub requests: u64,
    /// Calls that ended in an error status.
    pub failures: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retries refused because the budget was empty.
    pub budget_exhausted: u64,
    /// Endpoint ejections.
    pub ejections: u64,
    /// Endpoints in the balancers' sets (one balancer per chain target), as
    /// of the last change each took from its resolver (a balancer takes them
    /// when next polled, i.e. by a request).
    pub endpoints: u64,
}

impl TargetMetrics {
    pub(crate) fn request(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn failed(&self) {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn retried(&self) {
        self.inner.retries.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn budget_exhausted(&self) {
        self.inner.budget_exhausted.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn ejected(&self) {
        self.inner.ejections.fetch_add(1, Ordering::Relaxed);
    }
    /// A balancer took (`delta` > 0) or dropped endpoints.
    pub(crate) fn add_endpoints(&self, delta: i64) {
        if delta >= 0 {
            self.inner
                .endpoints
                .fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.inner
                .endpoints
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// The counts now.
    pub fn snapshot(&self) -> TargetCounts {
        let c = &self.inner;
        TargetCounts {
            requests: c.requests.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            budget_exhausted: c.budget_exhausted.load(Ordering::Relaxed),
            ejections: c.ejections.load(Ordering::Relaxed),
            endpoints: c.endpoints.load(Ordering::Relaxed),
        }
    }
}
