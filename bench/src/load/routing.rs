//! `mesh-bench routing`: what traffic management costs and how fast it
//! moves, against a running mesh with inventory instances of version v1 and
//! v2 (`mesh up --canary`), through one mesh client:
//!
//! 1. **Throughput**: GetItem at saturation, `--rounds` times in turn with
//!    inventory's chain
//!    - *plain*: Consul's default (one target: every instance, one balancer);
//!    - *routed*: a router + a 50/50 splitter + two subsets that both hold
//!      every instance (two targets, two balancers): what the client's
//!      routing costs, with the load spread as in the plain run. The aim:
//!      ≥ 0.95× the plain RPS (the median of the rounds' ratios);
//!    - *canary*: the router + splitter + subsets v1 and v2, split in
//!      proportion to their instances (2 and 1: 66.67/33.33). Reported, not
//!      an aim: a split fixes each version's share, so p2c can no longer
//!      shift load from a slower instance of one version to the other.
//! 2. **Shifts**: under a steady load, the split is moved between 100/0 and
//!    0/100 `--shifts` times; each time, from just before the config write
//!    until the first call lands on the newly weighted subset; p50 and max,
//!    and every failed call. The aim: new weights in effect within 1.5 s,
//!    and no call fails.
//!
//! It writes inventory's `service-resolver`, `service-splitter` and
//! `service-router` (the token needs `service:write` on inventory) and puts
//! back what it found at the end.

use std::{
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
use indicatif::ProgressBar;
use mesh::client::MeshClient;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use mesh_cli::traffic_config;

use super::{
    rpc::{self, Rpc, TimedCaller},
    via,
    workers::{self, Call as _, Plan, Stop},
};

const SERVICE: &str = "inventory";
/// The kinds written, in the order they are written (and deleted in reverse).
const KINDS: [&str; 3] = ["service-resolver", "service-splitter", "service-router"];
/// Longest wait for the client to take a new chain, or for a shift.
const TAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// The steady load during shifts: this many workers, one call each per
/// `SHIFT_WORKERS × SHIFT_INTERVAL` (1,000 calls/s in all).
const SHIFT_WORKERS: u32 = 8;
const SHIFT_INTERVAL: Duration = Duration::from_millis(1);
/// Between shifts.
const SHIFT_SPACING: Duration = Duration::from_millis(500);
/// The aims.
const RPS_RATIO_AIM: f64 = 0.95;
const SHIFT_AIM: Duration = Duration::from_millis(1500);

/// `mesh-bench routing` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct RoutingArgs {
    /// Plain/routed pairs of throughput runs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,

    /// Length of each throughput run.
    #[arg(value_name = "DURATION", long, default_value = "5s", value_parser = super::parse_duration)]
    duration: Duration,

    /// Workers of the throughput runs.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1000))]
    concurrency: u16,

    /// Split moves to time (0 skips them).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=200))]
    shifts: u32,

    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,

    /// The Consul agent (the token needs service:write on inventory).
    #[command(flatten)]
    consul: mesh::config::ConsulArgs,

    /// Connect mTLS to the services.
    #[command(flatten)]
    mtls: crate::mtls::MtlsArgs,
}

/// One plain/routed/canary triple: throughput, and this process's CPU
/// time per call (the client's own cost, which other load on the machine
/// disturbs far less than throughput).
#[derive(Debug, Serialize)]
struct Round {
    plain_rps: f64,
    routed_rps: f64,
    ratio: f64,
    canary_rps: f64,
    canary_ratio: f64,
    plain_cpu_us: f64,
    routed_cpu_us: f64,
    canary_cpu_us: f64,
    failed: u64,
}

/// inventory's chain during a throughput run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// No router, splitter or resolver entry.
    Plain,
    /// Router + 50/50 splitter + subsets `a` and `b`, both every instance.
    Mirrored,
    /// The shipped router and resolver (v1, v2), v1 taking this percentage.
    Versions(f64),
}

impl Phase {
    /// The subsets the client's table must have.
    fn subsets(self) -> &'static [&'static str] {
        match self {
            Phase::Plain => &[""],
            Phase::Mirrored => &["a", "b"],
            Phase::Versions(_) => &["v1", "v2"],
        }
    }
}

/// One split move.
#[derive(Debug, Serialize)]
struct Shift {
    to: &'static str,
    taken_ms: f64,
}

#[derive(Debug, Serialize)]
struct RoutingReport {
    v1_weight: f64,
    rounds: Vec<Round>,
    median_ratio: f64,
    median_canary_ratio: f64,
    median_plain_cpu_us: f64,
    median_routed_cpu_us: f64,
    median_canary_cpu_us: f64,
    rps_aim_met: bool,
    shifts: Vec<Shift>,
    shift_p50_ms: Option<f64>,
    shift_max_ms: Option<f64>,
    shift_failed_calls: u64,
    shift_aim_met: Option<bool>,
}

/// Runs both parts and restores inventory's entries.
pub(crate) async fn run(args: RoutingArgs) -> anyhow::Result<ExitCode> {
    // None given: in a checkout where `mesh up` runs, its agent (writing
    // config entries and the operator identity need the management token).
    let (consul, _) = mesh_cli::consul_settings::resolve_here(
        &args.consul,
        mesh_cli::consul_settings::Holder::Management,
    )?;
    let http = ConsulHttp::new(&consul);
    let saved = save(&http).await?;
    let identity = args.mtls.client_identity(&consul).await?;
    let mesh = via::mesh_client(consul, identity);
    let outcome = measure(&args, &http, &mesh).await;
    restore(&http, &saved)
        .await
        .context("putting inventory's config entries back")?;
    let report = outcome?;
    crate::print_report(&report, args.json, text)?;
    Ok(ExitCode::SUCCESS)
}

async fn measure(
    args: &RoutingArgs,
    http: &ConsulHttp,
    mesh: &MeshClient,
) -> anyhow::Result<RoutingReport> {
    let channel = mesh.channel(SERVICE);
    let fixture = rpc::prepare(Rpc::GetItem, |service| mesh.channel(service), None)
        .await
        .map_err(|status| anyhow::anyhow!("preparing get-item: {}", status.message()))?;
    let caller = || {
        TimedCaller::new(
            Rpc::GetItem,
            &fixture,
            channel.clone(),
            Duration::from_secs(10),
        )
    };
    let hidden = ProgressBar::hidden();

    set_chain(http, mesh, Phase::Versions(50.0)).await?;
    let v1_weight = proportional_v1_weight(mesh);
    let mut rounds = Vec::new();
    for _ in 0..args.rounds {
        let mut rps = [0.0; 3];
        let mut cpu_us = [0.0; 3];
        let mut failed = 0;
        let phases = [Phase::Plain, Phase::Mirrored, Phase::Versions(v1_weight)];
        for (slot, phase) in phases.into_iter().enumerate() {
            set_chain(http, mesh, phase).await?;
            let plan = Plan {
                concurrency: usize::from(args.concurrency),
                stop: Stop::After(args.duration),
                rate: None,
                keep_samples: false,
            };
            let cpu_before = crate::cpu::cpu_seconds("self")?;
            let outcome = workers::run(plan, caller(), &hidden).await;
            let cpu = crate::cpu::cpu_seconds("self")? - cpu_before;
            failed += outcome.requests() - outcome.ok;
            rps[slot] = outcome.requests() as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
            cpu_us[slot] = cpu * 1e6 / (outcome.requests().max(1) as f64);
        }
        rounds.push(Round {
            plain_rps: rps[0],
            routed_rps: rps[1],
            ratio: rps[1] / rps[0].max(1e-9),
            canary_rps: rps[2],
            canary_ratio: rps[2] / rps[0].max(1e-9),
            plain_cpu_us: cpu_us[0],
            routed_cpu_us: cpu_us[1],
            canary_cpu_us: cpu_us[2],
            failed,
        });
    }
    let median = |ratio: fn(&Round) -> f64| {
        let mut ratios: Vec<f64> = rounds.iter().map(ratio).collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let median_ratio = median(|round| round.ratio);
    let median_canary_ratio = median(|round| round.canary_ratio);
    let median_plain_cpu_us = median(|round| round.plain_cpu_us);
    let median_routed_cpu_us = median(|round| round.routed_cpu_us);
    let median_canary_cpu_us = median(|round| round.canary_cpu_us);

    let (shifts, shift_failed_calls) = if args.shifts > 0 {
        shifts(args.shifts, http, mesh, caller()).await?
    } else {
        (Vec::new(), 0)
    };
    let mut taken: Vec<f64> = shifts.iter().map(|shift| shift.taken_ms).collect();
    taken.sort_by(f64::total_cmp);
    let shift_p50_ms = taken.get(taken.len() / 2).copied();
    let shift_max_ms = taken.last().copied();
    Ok(RoutingReport {
        v1_weight,
        median_ratio,
        median_canary_ratio,
        median_plain_cpu_us,
        median_routed_cpu_us,
        median_canary_cpu_us,
        rps_aim_met: median_ratio >= RPS_RATIO_AIM,
        rounds,
        shift_aim_met: shift_max_ms
            .map(|max| max <= SHIFT_AIM.as_secs_f64() * 1000.0 && shift_failed_calls == 0),
        shifts,
        shift_p50_ms,
        shift_max_ms,
        shift_failed_calls,
    })
}

/// Moves the split between 100/0 and 0/100 `count` times under a steady
/// load; returns each move's time to the first call on the new subset, and
/// the calls that failed meanwhile.
async fn shifts(
    count: u32,
    http: &ConsulHttp,
    mesh: &MeshClient,
    caller: TimedCaller,
) -> anyhow::Result<(Vec<Shift>, u64)> {
    set_chain(http, mesh, Phase::Versions(100.0)).await?;
    let running = Arc::new(AtomicBool::new(true));
    let workers: Vec<_> = (0..SHIFT_WORKERS)
        .map(|_| {
            let (mut caller, running) = (caller.clone(), running.clone());
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(SHIFT_WORKERS * SHIFT_INTERVAL);
                let mut failed = 0u64;
                while running.load(Ordering::Relaxed) {
                    pace.tick().await;
                    if caller.call().await.is_err() {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let mut shifts = Vec::new();
    for n in 0..count {
        tokio::time::sleep(SHIFT_SPACING).await;
        let (to, v1_weight) = if n % 2 == 0 {
            ("v2", 0.0)
        } else {
            ("v1", 100.0)
        };
        let target = format!("{to}.{SERVICE}.default.dc1");
        let before = mesh
            .chain_target_requests(SERVICE)
            .get(&target)
            .copied()
            .unwrap_or(0);
        let written = Instant::now();
        write(http, &splitter(v1_weight)).await?;
        let taken = tokio::time::timeout(TAKE_TIMEOUT, async {
            loop {
                let now = mesh
                    .chain_target_requests(SERVICE)
                    .get(&target)
                    .copied()
                    .unwrap_or(0);
                if now > before {
                    return written.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .with_context(|| {
            format!("no call reached {target} within {TAKE_TIMEOUT:?} of the split's change")
        })?;
        shifts.push(Shift {
            to,
            taken_ms: taken.as_secs_f64() * 1000.0,
        });
    }
    running.store(false, Ordering::Relaxed);
    let mut failed = 0;
    for worker in workers {
        failed += worker.await.unwrap_or(0);
    }
    Ok((shifts, failed))
}

/// v1's share of calls in proportion to the subsets' instances, in percent
/// to 0.01 (what loads every instance alike).
fn proportional_v1_weight(mesh: &MeshClient) -> f64 {
    let count = |subset: &str| {
        mesh.chain(SERVICE)
            .targets
            .iter()
            .filter(|target| target.spec.subset == subset)
            .map(|target| target.endpoints)
            .sum::<usize>() as f64
    };
    let (v1, v2) = (count("v1"), count("v2"));
    (10_000.0 * v1 / (v1 + v2).max(1.0)).round() / 100.0
}

/// inventory's splitter with `v1_weight` % to v1, the rest to v2.
fn splitter(v1_weight: f64) -> Value {
    json!({
        "Kind": "service-splitter",
        "Name": SERVICE,
        "Splits": [
            {"Weight": v1_weight, "ServiceSubset": "v1"},
            {"Weight": ((100.0 - v1_weight) * 100.0).round() / 100.0, "ServiceSubset": "v2"},
        ],
    })
}

/// Sets inventory's chain for `phase`; returns once the client routes by it
/// and Consul has answered for every target's instances.
async fn set_chain(http: &ConsulHttp, mesh: &MeshClient, phase: Phase) -> anyhow::Result<()> {
    let (resolver, splitter, router) = match phase {
        Phase::Plain => {
            for kind in KINDS.iter().rev() {
                delete(http, kind).await?;
            }
            (None, None, None)
        }
        Phase::Mirrored => {
            let every = "Service.Service == \"inventory\"";
            (
                Some(
                    json!({"Kind": "service-resolver", "Name": SERVICE, "DefaultSubset": "a",
                            "Subsets": {"a": {"Filter": every}, "b": {"Filter": every}}}),
                ),
                Some(
                    json!({"Kind": "service-splitter", "Name": SERVICE, "Splits": [
                    {"Weight": 50, "ServiceSubset": "a"}, {"Weight": 50, "ServiceSubset": "b"}]}),
                ),
                Some(
                    json!({"Kind": "service-router", "Name": SERVICE, "Routes": [
                    {"Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "1"}]}},
                     "Destination": {"ServiceSubset": "b"}}]}),
                ),
            )
        }
        Phase::Versions(v1_weight) => (
            Some(serde_json::from_str(entry("inventory-resolver.json"))?),
            Some(splitter(v1_weight)),
            Some(serde_json::from_str(entry("inventory-router.json"))?),
        ),
    };
    if let (Some(resolver), Some(splitter), Some(router)) = (resolver, splitter, router) {
        write(
            http,
            &serde_json::from_str(entry("service-defaults-inventory.json"))?,
        )
        .await?;
        // The router first: the resolver may drop a subset the old router used.
        delete(http, "service-router").await?;
        delete(http, "service-splitter").await?;
        write(http, &resolver).await?;
        write(http, &splitter).await?;
        write(http, &router).await?;
    }
    let routed = phase != Phase::Plain;
    let taken = |view: &mesh::client::ChainView| {
        let Some(table) = &view.table else {
            return false;
        };
        let mut subsets: Vec<&str> = table.targets().iter().map(|t| t.subset.as_str()).collect();
        subsets.sort_unstable();
        table.router().is_some() == routed
            && subsets == phase.subsets()
            && view.targets.iter().all(|target| target.endpoints > 0)
    };
    let deadline = Instant::now() + TAKE_TIMEOUT;
    loop {
        let view = mesh.chain(SERVICE);
        if taken(&view) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let instances: Vec<(String, usize)> = view
                .targets
                .iter()
                .map(|target| (target.spec.id.clone(), target.endpoints))
                .collect();
            anyhow::bail!(
                "the mesh client did not take the {phase:?} chain within {TAKE_TIMEOUT:?}; \
                 inventory needs instances of version v1 and v2 (run `mesh up --canary`): \
                 {instances:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn entry(file: &str) -> &'static str {
    traffic_config::ENTRIES
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, body)| *body)
        .expect("a shipped entry")
}

async fn write(http: &ConsulHttp, entry: &Value) -> anyhow::Result<()> {
    traffic_config::write(http, "(bench-routing)", &entry.to_string()).await?;
    Ok(())
}

async fn delete(http: &ConsulHttp, kind: &str) -> anyhow::Result<()> {
    let path = format!("/v1/config/{kind}/{SERVICE}");
    http.send(
        http::Method::DELETE,
        &path,
        &path,
        Bytes::new(),
        TAKE_TIMEOUT,
    )
    .await
    .and_then(|answer| answer.success(&http::Method::DELETE, &path))
    .with_context(|| format!("deleting {kind}/{SERVICE}"))?;
    Ok(())
}

/// inventory's entries as they are now (`None`: absent).
async fn save(http: &ConsulHttp) -> anyhow::Result<Vec<(&'static str, Option<Value>)>> {
    let mut saved = Vec::new();
    for kind in KINDS {
        let path = format!("/v1/config/{kind}/{SERVICE}");
        let answer = http
            .get(&path, &path, TAKE_TIMEOUT)
            .await
            .with_context(|| format!("reading {kind}/{SERVICE}"))?;
        let entry = if answer.status == http::StatusCode::NOT_FOUND {
            None
        } else {
            let mut entry: Value = answer.success(&http::Method::GET, &path)?.json(&path)?;
            if let Some(fields) = entry.as_object_mut() {
                fields.remove("CreateIndex");
                fields.remove("ModifyIndex");
            }
            Some(entry)
        };
        saved.push((kind, entry));
    }
    Ok(saved)
}

/// Puts back what [`save`] found.
async fn restore(http: &ConsulHttp, saved: &[(&'static str, Option<Value>)]) -> anyhow::Result<()> {
    for (kind, _) in saved.iter().rev() {
        delete(http, kind).await?;
    }
    for (_, entry) in saved {
        if let Some(entry) = entry {
            write(http, entry).await?;
        }
    }
    Ok(())
}

fn text(report: &RoutingReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "GetItem at saturation: plain chain; routed (router + 50/50 splitter + two subsets of every \
         instance); canary (router + splitter {:.2}/{:.2} + subsets v1, v2)",
        report.v1_weight,
        100.0 - report.v1_weight
    );
    for (n, round) in report.rounds.iter().enumerate() {
        let _ = writeln!(
            out,
            "  round {}: plain {:.0} rps   routed {:.0} rps (ratio {:.3})   canary {:.0} rps (ratio {:.3})   failed {}",
            n + 1,
            round.plain_rps,
            round.routed_rps,
            round.ratio,
            round.canary_rps,
            round.canary_ratio,
            round.failed
        );
    }
    let _ = writeln!(
        out,
        "  median ratio routed/plain {:.3} (aim ≥ {RPS_RATIO_AIM}: {}); canary/plain {:.3}",
        report.median_ratio,
        if report.rps_aim_met { "met" } else { "not met" },
        report.median_canary_ratio
    );
    let _ = writeln!(
        out,
        "  client CPU per call (median): plain {:.1} µs, routed {:.1} µs, canary {:.1} µs",
        report.median_plain_cpu_us, report.median_routed_cpu_us, report.median_canary_cpu_us
    );
    if let (Some(p50), Some(max)) = (report.shift_p50_ms, report.shift_max_ms) {
        let _ = writeln!(
            out,
            "split moves under load ({} writes): write → first call on the new subset p50 {p50:.0} ms, max {max:.0} ms; failed calls {} (aim ≤ {} ms and 0 failed: {})",
            report.shifts.len(),
            report.shift_failed_calls,
            SHIFT_AIM.as_millis(),
            if report.shift_aim_met == Some(true) { "met" } else { "not met" }
        );
    }
    out
}
