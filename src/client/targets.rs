//! One chain target at run time: its own Consul endpoint watch (the subset's
//! filter and `OnlyPassing`), its own balancer (`Buffer` → `FailFast` →
//! p2c over per-endpoint ejection and PeakEWMA, dialled with the target
//! service's identity and the resolver's `ConnectTimeout`), whether failover
//! should skip it, and its counters (per service and target, process-wide).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        Arc, LazyLock, Mutex,
    },
    time::Duration,
};

use discovery::{Resolver, Snapshot};
use futures::future::BoxFuture;
use prometheus_client::metrics::histogram::Histogram;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tower::{buffer::Buffer, BoxError};

use super::routing::TargetSpec;

/// What the balancer of a target is, to the calls routed to it.
pub(crate) type TargetChannel =
    Buffer<http::Request<Body>, BoxFuture<'static, Result<http::Response<Body>, BoxError>>>;

/// Whether a target can take calls, as failover sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetHealth {
    /// Consul has not answered yet: calls wait for it (no failover on a guess).
    Unknown,
    /// Consul lists at least one healthy instance.
    Available,
    /// Consul answered: no healthy instance. Calls fail over.
    NoInstance,
    /// Consul answers no instance because the token may not read the
    /// service: calls fail with PERMISSION_DENIED, never fail over.
    Refused,
}

impl TargetHealth {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Available,
            2 => Self::NoInstance,
            3 => Self::Refused,
            _ => Self::Unknown,
        }
    }

    fn of(snapshot: &Snapshot) -> Self {
        if !snapshot.endpoints.is_empty() {
            Self::Available
        } else if snapshot.refused.is_some() {
            Self::Refused
        } else if snapshot.initialized {
            Self::NoInstance
        } else {
            Self::Unknown
        }
    }
}

/// Latency buckets of calls per target, in seconds: 0.5 ms … 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A target's counters, one set per (service, chain target) in the process:
/// they outlive a routing table and are shared by every client, as
/// Prometheus counters should (exported at scrape time by the collector).
#[derive(Debug)]
pub(crate) struct TargetCounters {
    /// First attempts sent to the target.
    pub(crate) requests: AtomicU64,
    /// Retries sent to it.
    pub(crate) retries: AtomicU64,
    /// Attempts that went on to a failover target because this one had no
    /// healthy instance.
    pub(crate) failovers: AtomicU64,
    /// Attempt latency, until response headers.
    pub(crate) latency: Histogram,
}

impl Default for TargetCounters {
    fn default() -> Self {
        Self {
            requests: AtomicU64::default(),
            retries: AtomicU64::default(),
            failovers: AtomicU64::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

/// (service, chain target ID) → its counters.
type CounterRegistry = BTreeMap<(String, String), Arc<TargetCounters>>;

static COUNTERS: LazyLock<Mutex<CounterRegistry>> = LazyLock::new(Mutex::default);

/// The counters of `target` as a target of `service`'s chain.
pub(crate) fn counters(service: &str, target: &str) -> Arc<TargetCounters> {
    COUNTERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((service.to_owned(), target.to_owned()))
        .or_default()
        .clone()
}

/// Every target's counters so far.
pub(crate) fn all_counters() -> Vec<((String, String), Arc<TargetCounters>)> {
    COUNTERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(key, counters)| (key.clone(), counters.clone()))
        .collect()
}

/// One target's stack (see the module docs).
pub(crate) struct TargetStack {
    pub(crate) spec: TargetSpec,
    pub(crate) channel: TargetChannel,
    pub(crate) resolver: Resolver,
    pub(crate) counters: Arc<TargetCounters>,
    health: Arc<HealthCell>,
    follower: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct HealthCell {
    state: AtomicU8,
    refused: Mutex<Option<String>>,
}

impl Drop for TargetStack {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl TargetStack {
    /// A target over `resolver`'s endpoints, through `channel` (its balancer).
    pub(crate) fn new(
        spec: TargetSpec,
        resolver: Resolver,
        channel: TargetChannel,
        counters: Arc<TargetCounters>,
    ) -> Self {
        let health = Arc::new(HealthCell::default());
        let follower = {
            let (health, mut snapshots) = (health.clone(), resolver.subscribe());
            tokio::spawn(async move {
                loop {
                    {
                        let snapshot = snapshots.borrow_and_update();
                        let state = TargetHealth::of(&snapshot);
                        *health.refused.lock().unwrap_or_else(|p| p.into_inner()) =
                            snapshot.refused.clone();
                        health.state.store(state as u8, Ordering::Release);
                    }
                    if snapshots.changed().await.is_err() {
                        return;
                    }
                }
            })
        };
        Self {
            spec,
            channel,
            resolver,
            counters,
            health,
            follower,
        }
    }

    /// Whether it can take calls now (one atomic load).
    pub(crate) fn health(&self) -> TargetHealth {
        TargetHealth::from_u8(self.health.state.load(Ordering::Acquire))
    }

    /// Why Consul refused it, when it did.
    pub(crate) fn refusal(&self) -> Option<String> {
        self.health
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records one attempt's latency.
    pub(crate) fn observe(&self, elapsed: Duration) {
        self.counters.latency.observe(elapsed.as_secs_f64());
    }
}
