//! `mesh-bench`: the mesh's benchmark lab, kept apart from the operator's
//! `mesh` command (which runs it for the old spellings `mesh bench` and
//! `mesh bench-discovery`, `mesh bench-routing`).
//!
//! - `mesh-bench load`: load one RPC through the mesh client, a direct
//!   channel to the instances (`--direct ADDR[,ADDR…]`) or a proxy (`--proxy ADDR`),
//!   and report throughput, errors by code and latency percentiles;
//! - `mesh-bench discovery`: how fast the mesh client follows a
//!   1,000-instance service, and what each endpoint costs in memory;
//! - `mesh-bench routing`: what traffic management costs (routed vs plain
//!   throughput) and how fast a split moves under load;
//! - `mesh-bench quiet`: whether the machine is quiet enough to benchmark
//!   (the lab refuses to start on a busy one unless told to run anyway).
//! - `mesh-bench events`: the outbox's cost on PlaceOrder, the latency from
//!   an order's commit to its shipment's, and events/s at saturation, on
//!   Redis or RabbitMQ.
//! - `mesh-bench order-cost`: CPU per PlaceOrder in each service (from
//!   `/proc`), against a baseline build in the same run.
//!
//! `scripts/bench` drives both to compare the mesh with what users would
//! pick instead (docs/BENCHMARKS.md).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod busy;
mod cpu;
mod events;
mod load;
mod mtls;
mod order_cost;
mod scale;

use std::{process::ExitCode, time::Duration};

use clap::Parser;

/// The `mesh-bench` command.
#[derive(Parser, Debug)]
#[command(
    name = "mesh-bench",
    version,
    about = "The mesh's benchmark lab: RPC load, discovery at scale, traffic management."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Load one RPC and report throughput and latency.
    Load(Box<load::LoadArgs>),
    /// Time discovery changes of a large service through to the balancer, and its memory.
    Discovery(scale::DiscoveryArgs),
    /// What traffic management costs (routed vs plain RPS) and how fast a split moves.
    Routing(load::routing::RoutingArgs),
    /// Whether the machine is quiet enough to benchmark (1-minute load average ≤ --max-load).
    Quiet(busy::QuietArgs),
    /// The events path: the outbox's cost on PlaceOrder, commit-to-shipment latency, events/s.
    Events(events::EventsArgs),
    /// CPU per PlaceOrder in each service, optionally against a baseline build.
    OrderCost(order_cost::OrderCostArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mesh-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let stopped = stop_signal();
        let command = async move {
            match cli.command {
                Command::Load(args) => load::run(*args).await,
                Command::Discovery(args) => scale::run(args).await,
                Command::Routing(args) => load::routing::run(args).await,
                Command::Quiet(args) => busy::quiet(args).await,
                Command::Events(args) => events::run(args).await,
                Command::OrderCost(args) => order_cost::run(args).await,
            }
        };
        // The services a benchmark starts lead process groups of their
        // own (a terminal's Ctrl-C does not reach them), and they are
        // stopped when their handles drop: on SIGINT or SIGTERM the
        // benchmark is dropped, not left to die with its children running.
        tokio::select! {
            result = command => result,
            signal = stopped => {
                Err(anyhow::anyhow!("stopped by {signal}; the processes it started were stopped"))
            }
        }
    });
    // Background tasks (Consul watches, connections) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mesh-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `report` to stdout: one JSON line with `json`, else its `text`.
/// A closed stdout is an error, not a silently lost result.
fn print_report<T: serde::Serialize>(
    report: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let out = if json {
        format!("{}\n", serde_json::to_string(report)?)
    } else {
        text(report)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|error| anyhow::anyhow!("cannot write the report to stdout: {error}"))
}

/// Where the service binaries are: `bin` when given, else the folder
/// mesh-bench itself runs from (a `cargo build` puts them side by side).
fn service_binaries(bin: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    match bin {
        Some(bin) => Ok(bin.to_owned()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("mesh-bench has no folder")?
            .to_owned()),
    }
}

/// Watches SIGINT and SIGTERM from the moment it is called (so a signal
/// that comes while the benchmark starts its first process is not missed);
/// the future ends with the name of the first that comes. It never ends if
/// they cannot be watched (the benchmark then ends only by itself or by
/// SIGKILL).
fn stop_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let watched = signal(SignalKind::interrupt()).and_then(|interrupt| {
        signal(SignalKind::terminate()).map(|terminate| (interrupt, terminate))
    });
    async move {
        let Ok((mut interrupt, mut terminate)) = watched else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    }
}
