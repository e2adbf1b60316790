//! `mesh-bench discovery` (also `mesh bench-discovery`): how fast and how cheaply the mesh client follows a
//! large service.
//!
//! Registers N catalog entries of one service (each with a passing check, all
//! pointing at one real gRPC server) in a real Consul agent, builds the mesh
//! client's channel to that service under a light load of health checks (the
//! balancer takes the resolver's changes when a request polls it), then
//! removes and re-adds one entry at a time and measures, from the moment
//! Consul acknowledged the write (its index has moved), until
//!
//! - the resolver published the new set (`resolver_ms`), and
//! - the balancer held the new set (`balancer_ms`, the client's endpoint count);
//!
//! and, after each change, the two parts of that path apart: how long
//! Consul takes to answer the whole list (`consul_ms`: one plain read of the
//! same health query, to its last byte) and how long the client takes to
//! parse that answer (`parse_ms`, `discovery::parse_health_list`); the
//! client's share of a change is `parse_ms` plus `balancer_ms − resolver_ms`
//! (diff and balancer update), reported as `client_ms`.
//!
//! It also reports the client's resident memory per endpoint held (lazily
//! connected) and per open connection. Every entry is deregistered at the end.
//!
//! The client is plaintext (the catalog entries are not Connect-native):
//! mTLS changes how endpoints are dialled, not how the set is followed.

use std::{
    collections::HashSet,
    future::Future,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use discovery::ConsulHttp;
use futures::{stream, StreamExt as _, TryStreamExt as _};
use mesh::client::{MeshClient, TargetMetrics};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// The fake node every entry is registered on.
const NODE: &str = "mesh-bench-discovery";
/// Catalog writes in flight while registering.
const REGISTER_CONCURRENCY: usize = 16;
/// The watch may return back to back a few times, then once per 200 ms:
/// changes are spaced wider so that no measurement waits for that limit.
const CHANGE_SPACING: Duration = Duration::from_millis(300);
/// Longest wait for one change to reach the balancer.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest catalog write.
const CONSUL_TIMEOUT: Duration = Duration::from_secs(5);

/// `mesh-bench discovery` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct DiscoveryArgs {
    /// The gRPC server (any mesh service instance) every entry points at:
    /// it answers the health checks that keep the balancer polled.
    #[arg(long)]
    target: std::net::SocketAddr,

    /// Catalog entries of the service.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    endpoints: u32,

    /// One-entry changes to time (alternately a removal and a re-registration).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    changes: u32,

    /// Health checks sent through the mesh client during the run (to warm
    /// connections up; more open more of them).
    #[arg(long, default_value_t = 3000)]
    warm_requests: u64,

    /// The Consul service name to register (must not be a real one).
    #[arg(long, default_value = "mesh-bench-discovery")]
    service: String,

    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,

    /// The Consul agent.
    #[command(flatten)]
    consul: mesh::config::ConsulArgs,
}

/// The timing of one change, ms after Consul acknowledged it.
#[derive(Debug, Serialize)]
struct ChangeTiming {
    /// `remove` or `add`.
    change: &'static str,
    resolver_ms: f64,
    balancer_ms: f64,
    /// Consul's answer to the whole list, to its last byte.
    consul_ms: f64,
    /// The client's parse of that answer.
    parse_ms: f64,
    /// The client's share: parse, then resolver → balancer.
    client_ms: f64,
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct DiscoveryReport {
    service: String,
    endpoints: u32,
    register_s: f64,
    /// From creating the client until its balancer held every endpoint.
    cold_start_ms: f64,
    changes: Vec<ChangeTiming>,
    resolver_ms: Summary,
    balancer_ms: Summary,
    consul_ms: Summary,
    parse_ms: Summary,
    client_ms: Summary,
    rss_before_kib: u64,
    rss_endpoints_held_kib: u64,
    rss_warm_kib: u64,
    connections: usize,
    bytes_per_endpoint: f64,
    bytes_per_connection: f64,
}

/// Median and maximum of a series.
#[derive(Debug, Serialize)]
struct Summary {
    p50: f64,
    max: f64,
}

impl Summary {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        let mut values: Vec<f64> = values.collect();
        values.sort_by(f64::total_cmp);
        Self {
            p50: values.get(values.len() / 2).copied().unwrap_or(0.0),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

/// Registers, measures, deregisters, reports.
pub(crate) async fn run(args: DiscoveryArgs) -> anyhow::Result<ExitCode> {
    let api = ConsulHttp::new(&args.consul.config()?);
    let ids: Vec<String> = (0..args.endpoints)
        .map(|n| format!("{}-{n}", args.service))
        .collect();
    let started = Instant::now();
    for_each_id(&ids, |id| register(&api, &args, id)).await?;
    let register_s = started.elapsed().as_secs_f64();
    let outcome = measure(&args, &api, &ids, register_s).await;
    for_each_id(&ids, |id| deregister(&api, id))
        .await
        .context("deregistering the bench entries")?;
    let report = outcome?;
    crate::print_report(&report, args.json, text)?;
    Ok(ExitCode::SUCCESS)
}

async fn measure(
    args: &DiscoveryArgs,
    api: &ConsulHttp,
    ids: &[String],
    register_s: f64,
) -> anyhow::Result<DiscoveryReport> {
    let expected = ids.len();
    let rss_before_kib = rss_kib()?;
    let consul = args.consul.config()?;
    let mesh = MeshClient::new(consul, mesh::client::ClientOptions::default());
    let started = Instant::now();
    let channel = mesh.channel(&args.service);
    let metrics = mesh.metrics(&args.service);
    let resolver = mesh.resolver(&args.service);
    let load = Load::start(HealthClient::new(channel));
    let watched = metrics.clone();
    wait_for(move || held(&watched) == expected, CHANGE_TIMEOUT * 3)
        .await
        .context("the balancer never held every endpoint")?;
    let cold_start_ms = millis(started.elapsed());
    let rss_endpoints_held_kib = rss_kib()?;

    let mut changes = Vec::new();
    for n in 0..args.changes {
        tokio::time::sleep(CHANGE_SPACING).await;
        // Remove an entry, then add the same one back.
        let id = &ids[(n / 2) as usize % ids.len()];
        let (change, count) = if n % 2 == 0 {
            deregister(api, id).await?;
            ("remove", expected - 1)
        } else {
            register(api, args, id).await?;
            ("add", expected)
        };
        let acknowledged = Instant::now();
        let mut snapshots = resolver.subscribe();
        let resolver_ms = tokio::time::timeout(
            CHANGE_TIMEOUT,
            snapshots.wait_for(|snapshot| snapshot.endpoints.len() == count),
        )
        .await
        .map(|_| millis(acknowledged.elapsed()))
        .context("the resolver did not see the change")?;
        let watched = metrics.clone();
        wait_for(move || held(&watched) == count, CHANGE_TIMEOUT)
            .await
            .context("the balancer did not take the change")?;
        let balancer_ms = millis(acknowledged.elapsed());
        let (consul_ms, parse_ms) = consul_and_parse(api, &args.service, count).await?;
        changes.push(ChangeTiming {
            change,
            resolver_ms,
            balancer_ms,
            consul_ms,
            parse_ms,
            client_ms: parse_ms + (balancer_ms - resolver_ms).max(0.0),
        });
    }
    if args.changes % 2 == 1 {
        // Leave every entry registered, as the warm-up below expects.
        register(
            api,
            args,
            &ids[((args.changes - 1) / 2) as usize % ids.len()],
        )
        .await?;
        let watched = metrics.clone();
        wait_for(move || held(&watched) == expected, CHANGE_TIMEOUT).await?;
    }
    load.until(args.warm_requests).await;
    let rss_warm_kib = rss_kib()?;
    let connections = connections_to(args.target)?;
    load.stop().await;

    let per_endpoint = (rss_endpoints_held_kib.saturating_sub(rss_before_kib) * 1024) as f64;
    let per_connection = (rss_warm_kib.saturating_sub(rss_endpoints_held_kib) * 1024) as f64;
    Ok(DiscoveryReport {
        service: args.service.clone(),
        endpoints: args.endpoints,
        register_s,
        cold_start_ms,
        resolver_ms: Summary::of(changes.iter().map(|c| c.resolver_ms)),
        balancer_ms: Summary::of(changes.iter().map(|c| c.balancer_ms)),
        consul_ms: Summary::of(changes.iter().map(|c| c.consul_ms)),
        parse_ms: Summary::of(changes.iter().map(|c| c.parse_ms)),
        client_ms: Summary::of(changes.iter().map(|c| c.client_ms)),
        changes,
        rss_before_kib,
        rss_endpoints_held_kib,
        rss_warm_kib,
        connections,
        bytes_per_endpoint: per_endpoint / expected as f64,
        bytes_per_connection: per_connection / connections.max(1) as f64,
    })
}

/// Consul's answer time for the whole passing list of `service` (a plain
/// read, as the resolver's query without blocking) and the client's parse
/// time of it; the parse must find `expected` endpoints.
async fn consul_and_parse(
    api: &ConsulHttp,
    service: &str,
    expected: usize,
) -> anyhow::Result<(f64, f64)> {
    let path = format!("/v1/health/service/{service}");
    let started = Instant::now();
    let answer = api
        .get(&path, &format!("{path}?passing"), CONSUL_TIMEOUT)
        .await
        .context("reading the health list")?;
    let consul_ms = millis(started.elapsed());
    let started = std::time::Instant::now();
    let found = discovery::parse_health_list(&answer.body)
        .map_err(|error| anyhow::anyhow!("the health list: {error}"))?;
    let parse_ms = millis(started.elapsed());
    anyhow::ensure!(
        found == expected,
        "the health list has {found} endpoints, expected {expected}"
    );
    Ok((consul_ms, parse_ms))
}

fn held(metrics: &TargetMetrics) -> usize {
    usize::try_from(metrics.snapshot().endpoints).unwrap_or(usize::MAX)
}

fn millis(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

/// Checks `done` after every turn of the scheduler until it holds.
/// How often [`wait_for`] looks.
const WAIT_POLL: Duration = Duration::from_micros(50);

/// Waits until `done`, looking every 50 µs from a thread of its own: a spin
/// on the runtime (as this once was) takes a core from the client it times
/// on a 2-core machine, and Tokio's timers tick in whole milliseconds.
async fn wait_for(
    done: impl Fn() -> bool + Send + 'static,
    timeout: Duration,
) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        while !done() {
            anyhow::ensure!(Instant::now() < deadline, "timed out after {timeout:?}");
            std::thread::sleep(WAIT_POLL);
        }
        Ok(())
    })
    .await
    .context("the waiting thread")?
}

async fn for_each_id<'a, F, Fut>(ids: &'a [String], action: F) -> anyhow::Result<()>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    stream::iter(ids.iter().map(|id| action(id.as_str())))
        .buffer_unordered(REGISTER_CONCURRENCY)
        .try_collect()
        .await
}

/// One catalog entry with a passing check, on the bench's fake node.
async fn register(api: &ConsulHttp, args: &DiscoveryArgs, id: &str) -> anyhow::Result<()> {
    let entry = json!({
        "Node": NODE,
        "Address": args.target.ip().to_string(),
        "Service": {
            "ID": id,
            "Service": args.service,
            "Address": args.target.ip().to_string(),
            "Port": args.target.port(),
        },
        "Check": {
            "CheckID": format!("{id}-check"),
            "Name": "bench",
            "Status": "passing",
            "ServiceID": id,
        },
    });
    catalog_put(api, "/v1/catalog/register", &entry)
        .await
        .with_context(|| format!("registering {id}"))
}

async fn deregister(api: &ConsulHttp, id: &str) -> anyhow::Result<()> {
    let entry = json!({ "Node": NODE, "ServiceID": id });
    catalog_put(api, "/v1/catalog/deregister", &entry)
        .await
        .with_context(|| format!("deregistering {id}"))
}

/// PUT `entry` to a catalog endpoint; Consul's refusal is the error.
async fn catalog_put(
    api: &ConsulHttp,
    path: &str,
    entry: &serde_json::Value,
) -> Result<(), discovery::ConsulError> {
    api.put(path, path, Bytes::from(entry.to_string()), CONSUL_TIMEOUT)
        .await
        .and_then(|answer| answer.success(&http::Method::PUT, path))
        .map(drop)
}

/// Health checks through the mesh channel, two at a time, until stopped: they
/// poll the balancer (which takes discovery changes then) and open
/// connections to the endpoints it picks.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: HealthClient<mesh::client::Channel>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let workers = (0..2)
            .map(|_| {
                let (stop, sent, mut client) = (stop.clone(), sent.clone(), client.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let request = HealthCheckRequest {
                            service: String::new(),
                        };
                        if client.check(request).await.is_err() {
                            // Nothing to balance over yet: do not spin.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            workers,
        }
    }

    /// Waits until `requests` more have been sent.
    async fn until(&self, requests: u64) {
        let target = self.sent.load(Ordering::Relaxed) + requests;
        while self.sent.load(Ordering::Relaxed) < target {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}

/// This process's resident memory, KiB.
fn rss_kib() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

/// Established TCP connections of this process to `target`.
fn connections_to(target: std::net::SocketAddr) -> anyhow::Result<usize> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").context("reading /proc/self/fd")? {
        let link = fd.and_then(|fd| std::fs::read_link(fd.path()));
        if let Some(inode) = link.ok().as_ref().and_then(|link| {
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        }) {
            inodes.insert(inode);
        }
    }
    let table = if target.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let port = format!(":{:04X}", target.port());
    let table = std::fs::read_to_string(table).with_context(|| format!("reading {table}"))?;
    Ok(table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| {
            // remote address, state 01 = ESTABLISHED, inode
            fields.len() > 9
                && fields[2].ends_with(&port)
                && fields[3] == "01"
                && inodes.contains(fields[9])
        })
        .count())
}

fn text(report: &DiscoveryReport) -> String {
    format!(
        "{service}: {endpoints} endpoints (registered in {register:.1} s)\n  \
         cold start to a full balancer {cold:.1} ms\n  \
         one change, Consul ack → resolver: p50 {rp50:.2} ms, max {rmax:.2} ms\n  \
         one change, Consul ack → balancer: p50 {bp50:.2} ms, max {bmax:.2} ms\n  \
         of which Consul's answer of the whole list p50 {cp50:.2} ms, the client's share p50 {clp50:.2} ms (parse p50 {pp50:.2} ms)\n  \
         client RSS {before} KiB → {held} KiB holding them → {warm} KiB with {connections} connections open\n  \
         {per_endpoint:.0} bytes per endpoint held, {per_connection:.0} bytes per connection\n",
        service = report.service,
        endpoints = report.endpoints,
        register = report.register_s,
        cold = report.cold_start_ms,
        rp50 = report.resolver_ms.p50,
        rmax = report.resolver_ms.max,
        bp50 = report.balancer_ms.p50,
        bmax = report.balancer_ms.max,
        cp50 = report.consul_ms.p50,
        clp50 = report.client_ms.p50,
        pp50 = report.parse_ms.p50,
        before = report.rss_before_kib,
        held = report.rss_endpoints_held_kib,
        warm = report.rss_warm_kib,
        connections = report.connections,
        per_endpoint = report.bytes_per_endpoint,
        per_connection = report.bytes_per_connection,
    )
}
