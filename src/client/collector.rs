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
//!
//! Per discovery-chain target (`service` is the service called, `chain_target`
//! Consul's target ID such as `v2.inventory.default.dc1`), from the
//! process-wide counters the dispatch layer keeps:
//!
//! | metric | what |
//! |---|---|
//! | `mesh_client_chain_requests_total{service,chain_target}` | first attempts sent to the target |
//! | `mesh_client_chain_retries_total{service,chain_target}` | retries sent to it |
//! | `mesh_client_chain_failovers_total{service,chain_target}` | attempts sent to a failover target while it had no healthy instance |
//! | `mesh_client_chain_attempt_duration_seconds{service,chain_target}` | attempt latency until response headers (histogram) |
//! | `mesh_client_chain_endpoints{service,chain_target}` | healthy instances Consul lists for it (targets of the tables in force) |

use std::{
    collections::BTreeMap,
    sync::{LazyLock, Mutex, Once, Weak},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Unit,
};

use super::{targets, MeshClient, Shared};

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

fn clients() -> Vec<MeshClient> {
    CLIENTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .map(|shared| MeshClient { shared })
        .collect()
}

fn rows() -> BTreeMap<String, Row> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for client in clients() {
        for (target, resolvers, metrics) in client.targets() {
            let counts = metrics.snapshot();
            let row = rows.entry(target).or_default();
            row.requests += counts.requests;
            row.failures += counts.failures;
            row.retries += counts.retries;
            row.budget_exhausted += counts.budget_exhausted;
            row.ejections += counts.ejections;
            for resolver in resolvers {
                let snapshot = resolver.snapshot();
                row.endpoints += i64::try_from(snapshot.endpoints.len()).unwrap_or(i64::MAX);
                row.updates += snapshot.updates;
                row.errors += snapshot.errors;
                row.stale |= snapshot.stale;
            }
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

/// Healthy instances per (service, chain target) of the tables in force.
fn chain_endpoints() -> BTreeMap<(String, String), i64> {
    let mut endpoints = BTreeMap::new();
    for client in clients() {
        let services: Vec<_> = client
            .shared
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|target| target.routing.clone())
            .collect();
        for routing in services {
            let Some(live) = routing.live() else { continue };
            for stack in &live.targets {
                let count = stack.resolver.snapshot().endpoints.len();
                *endpoints
                    .entry((routing.service().to_owned(), stack.spec.id.clone()))
                    .or_default() += i64::try_from(count).unwrap_or(i64::MAX);
            }
        }
    }
    endpoints
}

type ChainCounted = fn(&targets::TargetCounters) -> u64;

const CHAIN_COUNTERS: [(&str, &str, ChainCounted); 3] = [
    (
        "mesh_client_chain_requests",
        "First attempts sent to each discovery-chain target",
        |counters| counters.requests.load(std::sync::atomic::Ordering::Relaxed),
    ),
    (
        "mesh_client_chain_retries",
        "Retries sent to each discovery-chain target",
        |counters| counters.retries.load(std::sync::atomic::Ordering::Relaxed),
    ),
    (
        "mesh_client_chain_failovers",
        "Attempts sent to a failover target while this target had no healthy instance",
        |counters| {
            counters
                .failovers
                .load(std::sync::atomic::Ordering::Relaxed)
        },
    ),
];

fn encode_chain(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let counters = targets::all_counters();
    if counters.is_empty() {
        return Ok(());
    }
    for (name, help, value) in CHAIN_COUNTERS {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for ((service, target), counters) in &counters {
            let labels = [
                ("service", service.as_str()),
                ("chain_target", target.as_str()),
            ];
            ConstCounter::new(value(counters)).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "mesh_client_chain_attempt_duration",
        "Attempt latency until response headers, per discovery-chain target",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for ((service, target), counters) in &counters {
        let labels = [
            ("service", service.as_str()),
            ("chain_target", target.as_str()),
        ];
        counters.latency.encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "mesh_client_chain_endpoints",
        "Healthy instances Consul lists for each discovery-chain target in force",
        None,
        MetricType::Gauge,
    )?;
    for ((service, target), count) in chain_endpoints() {
        let labels = [
            ("service", service.as_str()),
            ("chain_target", target.as_str()),
        ];
        ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ClientCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_chain(&mut encoder)?;
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
