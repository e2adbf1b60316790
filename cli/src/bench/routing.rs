//! `mesh bench-routing`: what traffic management costs and how fast it
//! moves, against a running mesh with inventory instances of version v1 and
//! v2 (`mesh up --canary`), through one mesh client:
//!
//! 1. **Throughput**: GetItem at saturation, alternately with inventory's
//!    chain reduced to Consul's default (one target: every instance) and
//!    with a router + a splitter + two subsets (each its own balancer),
//!    `--rounds` times; the ratio of the two in each round, and their
//!    median. The split follows the subsets' instance counts (2 v1 and 1 v2:
//!    66.67/33.33), so that both runs load every instance alike and the
//!    ratio is the cost of routing, not of an unbalanced split. The aim: the
//!    routed call keeps ≥ 0.95× the plain RPS.
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

use super::{
    load::{self, Call as _, Plan, Stop},
    rpc::{self, Rpc, TimedCaller},
    via,
};
use crate::traffic_config;

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

/// `mesh bench-routing` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct RoutingArgs {
    /// Plain/routed pairs of throughput runs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
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

/// One plain/routed pair.
#[derive(Debug, Serialize)]
struct Round {
    plain_rps: f64,
    routed_rps: f64,
    ratio: f64,
    failed: u64,
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
    rps_aim_met: bool,
    shifts: Vec<Shift>,
    shift_p50_ms: Option<f64>,
    shift_max_ms: Option<f64>,
    shift_failed_calls: u64,
    shift_aim_met: Option<bool>,
}

/// Runs both parts and restores inventory's entries.
pub(crate) async fn run(args: RoutingArgs) -> anyhow::Result<ExitCode> {
    let consul = args.consul.config()?;
    let http = ConsulHttp::new(&consul);
    let saved = save(&http).await?;
    let identity = args.mtls.client_identity(&consul).await?;
    let mesh = via::mesh_client(consul, identity);
    let outcome = measure(&args, &http, &mesh).await;
    restore(&http, &saved)
        .await
        .context("putting inventory's config entries back")?;
    let report = outcome?;
    if args.json {
        crate::output::print_line(&serde_json::to_string(&report)?);
    } else {
        crate::output::print(&text(&report));
    }
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

    set_chain(http, mesh, true, 50.0).await?;
    let v1_weight = proportional_v1_weight(mesh);
    let mut rounds = Vec::new();
    for _ in 0..args.rounds {
        let mut rps = [0.0; 2];
        let mut failed = 0;
        for (slot, routed) in [false, true].into_iter().enumerate() {
            set_chain(http, mesh, routed, v1_weight).await?;
            let plan = Plan {
                concurrency: usize::from(args.concurrency),
                stop: Stop::After(args.duration),
                rate: None,
                keep_samples: false,
            };
            let outcome = load::run(plan, caller(), &hidden).await;
            failed += outcome.requests() - outcome.ok;
            rps[slot] = outcome.requests() as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
        }
        rounds.push(Round {
            plain_rps: rps[0],
            routed_rps: rps[1],
            ratio: rps[1] / rps[0].max(1e-9),
            failed,
        });
    }
    let mut ratios: Vec<f64> = rounds.iter().map(|round| round.ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let median_ratio = ratios[ratios.len() / 2];

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
    set_chain(http, mesh, true, 100.0).await?;
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

/// Consul's default chain for inventory (`routed` false), or router +
/// splitter (`v1_weight`) + two subsets; returns once the client routes by it.
async fn set_chain(
    http: &ConsulHttp,
    mesh: &MeshClient,
    routed: bool,
    v1_weight: f64,
) -> anyhow::Result<()> {
    if routed {
        write(http, &serde_json::from_str(traffic_config::ENTRIES[1].1)?).await?;
        write(http, &serde_json::from_str(resolver_entry())?).await?;
        write(http, &splitter(v1_weight)).await?;
        write(http, &serde_json::from_str(router_entry())?).await?;
    } else {
        for kind in KINDS.iter().rev() {
            delete(http, kind).await?;
        }
    }
    let taken = |view: &mesh::client::ChainView| match &view.table {
        Some(table) if routed => {
            table.router().is_some()
                && table.targets().len() == 2
                && view.targets.iter().all(|target| target.endpoints > 0)
        }
        Some(table) => table.router().is_none() && table.targets().len() == 1,
        None => false,
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
                "the mesh client did not take the {} chain within {TAKE_TIMEOUT:?}; inventory needs \
                 instances of version v1 and v2 (run `mesh up --canary`): {instances:?}",
                if routed { "routed" } else { "plain" }
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn resolver_entry() -> &'static str {
    entry("inventory-resolver.json")
}

fn router_entry() -> &'static str {
    entry("inventory-router.json")
}

fn entry(file: &str) -> &'static str {
    traffic_config::ENTRIES
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, body)| *body)
        .expect("a shipped entry")
}

async fn write(http: &ConsulHttp, entry: &Value) -> anyhow::Result<()> {
    traffic_config::write(http, "(bench-routing)", &entry.to_string()).await
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
        "GetItem at saturation: plain chain vs router + splitter ({:.2}/{:.2}) + two subsets",
        report.v1_weight,
        100.0 - report.v1_weight
    );
    for (n, round) in report.rounds.iter().enumerate() {
        let _ = writeln!(
            out,
            "  round {}: plain {:.0} rps   routed {:.0} rps   ratio {:.3}   failed {}",
            n + 1,
            round.plain_rps,
            round.routed_rps,
            round.ratio,
            round.failed
        );
    }
    let _ = writeln!(
        out,
        "  median ratio {:.3} (aim ≥ {RPS_RATIO_AIM}: {})",
        report.median_ratio,
        if report.rps_aim_met { "met" } else { "not met" }
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
