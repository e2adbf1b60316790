//! The mesh client's Prometheus metrics, read at scrape time from what the
//! client already keeps — each target's [`TargetMetrics`](super::TargetMetrics)
//! counters and its resolver's Consul [`Snapshot`](discovery::Snapshot) — for
//! every live [`MeshClient`] of the process (summed per target):
//!
//! | metric | source |
//! |---|---|
//! | `mesh_client_requests_total{target}` | calls started |
//! | `mesh_client_failures_total{target}` | calls that ended in an error status |
//! | `mesh_client_retries_total{target}` | retries sent |
//! | `mesh_client_retry_budget_exhausted_total{target}` | retries the budget refused |
//! | `mesh_client_ejections_total{target}` | endpoint ejections |
//! | `mesh_client_endpoints{target}` | healthy instances (the balancer's set) |
//! | `mesh_client_discovery_updates_total{target}` | Consul answers that changed the set |
//! | `mesh_client_discovery_errors_total{target}` | failed Consul queries |
//! | `mesh_client_discovery_stale{target}` | 1 while Consul is unreachable (last set kept) |
//!
//! `mesh_client_endpoint_requests_total{target,endpoint}` is counted on the
//! data path instead (`instrument::EndpointObserve`).

use std::{
    collections::BTreeMap,
    sync::{LazyLock, Mutex, Once, Weak},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use super::{MeshClient, Shared};

static CLIENTS: LazyLock<Mutex<Vec<Weak<Shared>>>> = LazyLock::new(Mutex::default);

/// Includes `client` in the process's metrics while it lives.
pub(crate) fn track(client: &MeshClient) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| crate::telemetry::metrics::register_collector(Box::new(ClientCollector)));
    let mut clients = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    clients.retain(|client| client.strong_count() > 0);
    clients.push(std::sync::Arc::downgrade(&client.shared));
}

#[derive(Debug, Default, Clone, Copy)]
struct Row {
    requests: u64,
    failures: u64,
    retries: u64,
    budget_exhausted: u64,
    ejections: u64,
    endpoints: i64,
    updates: u64,
    errors: u64,
    stale: bool,
}

fn rows() -> BTreeMap<String, Row> {
    let clients: Vec<MeshClient> = CLIENTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .map(|shared| MeshClient { shared })
        .collect();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for client in clients {
        for (target, resolver, metrics) in client.targets() {
            let counts = metrics.snapshot();
            let snapshot = resolver.snapshot();
            let row = rows.entry(target).or_default();
            row.requests += counts.requests;
            row.failures += counts.failures;
            row.retries += counts.retries;
            row.budget_exhausted += counts.budget_exhausted;
            row.ejections += counts.ejections;
            row.endpoints += i64::try_from(snapshot.endpoints.len()).unwrap_or(i64::MAX);
            row.updates += snapshot.updates;
            row.errors += snapshot.errors;
            row.stale |= snapshot.stale;
        }
    }
    rows
}

#[derive(Debug)]
struct ClientCollector;

type Counted = fn(&Row) -> u64;
type Gauged = fn(&Row) -> i64;

const COUNTERS: [(&str, &str, Counted); 7] = [
    (
        "mesh_client_requests",
        "Calls the mesh client started, per target service",
        |row| row.requests,
    ),
    (
        "mesh_client_failures",
        "Calls that ended in an error status, per target service",
        |row| row.failures,
    ),
    (
        "mesh_client_retries",
        "Retries the mesh client sent, per target service",
        |row| row.retries,
    ),
    (
        "mesh_client_retry_budget_exhausted",
        "Retries refused because the retry budget was empty",
        |row| row.budget_exhausted,
    ),
    (
        "mesh_client_ejections",
        "Endpoints ejected after consecutive failures",
        |row| row.ejections,
    ),
    (
        "mesh_client_discovery_updates",
        "Consul answers that changed the set of endpoints",
        |row| row.updates,
    ),
    (
        "mesh_client_discovery_errors",
        "Failed Consul health queries",
        |row| row.errors,
    ),
];

const GAUGES: [(&str, &str, Gauged); 2] = [
    (
        "mesh_client_endpoints",
        "Healthy endpoints of the target service (the balancer's set)",
        |row| row.endpoints,
    ),
    (
        "mesh_client_discovery_stale",
        "1 while Consul is unreachable and the last known endpoints are kept",
        |row| i64::from(row.stale),
    ),
];

impl Collector for ClientCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = rows();
        if rows.is_empty() {
            return Ok(());
        }
        for (name, help, value) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (target, row) in &rows {
                ConstCounter::new(value(row))
                    .encode(family.encode_family(&[("target", target.as_str())])?)?;
            }
        }
        for (name, help, value) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (target, row) in &rows {
                ConstGauge::new(value(row))
                    .encode(family.encode_family(&[("target", target.as_str())])?)?;
            }
        }
        Ok(())
    }
}
