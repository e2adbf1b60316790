//! `mesh`: the command line of the mesh.
//!
//! - `mesh up`: Consul (found, or started with ACLs default-deny and HTTPS),
//!   every service as supervised processes, demo data, ready-to-paste grpcurl
//!   commands;
//! - `mesh env`: the local environment alone (a Consul agent), printed as
//!   variables to use, until a stop signal (what the scripts run);
//! - `mesh status`: every registered instance and its health, from Consul;
//! - `mesh bench`: load one RPC through the mesh client, a direct channel or a proxy;
//! - `mesh bench-discovery`: how fast the client follows a 1,000-instance service;
//! - `mesh bench-routing`: routed vs plain throughput, and how fast a split moves;
//! - `mesh chain <service>`: its discovery chain as the client compiles it,
//!   and which target a given call takes and why;
//! - `mesh serve <service>`: one service in this process (what `mesh up` runs);
//! - `mesh health ADDR`: a gRPC health check for container healthchecks;
//! - `mesh cert IDENTITY --out DIR`: a Connect certificate for grpcurl.
//! - `mesh acl bootstrap`: the mesh's ACL policies and tokens in a Consul with ACLs on.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod acl;
mod bench;
mod cert;
mod chain;
mod consul;
mod health;
mod intentions;
mod local;
mod metadata;
mod mtls;
mod output;
mod process;
mod serve;
mod services;
mod shop;
mod signals;
mod status;
mod tools;
mod traffic_config;
mod up;

use std::{process::ExitCode, time::Duration};

use clap::Parser;

/// The `mesh` command.
#[derive(Parser, Debug)]
#[command(
    name = "mesh",
    version,
    about = "A gRPC service mesh on Consul: run it, watch it, load it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of `serve`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Run Consul (unless one answers) and every service, supervised, with demo data.
    Up(up::UpArgs),
    /// Run the local environment alone (a Consul agent, secure unless told
    /// otherwise), print the variables to use it, stop it on Ctrl-C.
    Env(local::command::EnvArgs),
    /// Show every registered instance and its health (exit 1 if any is critical).
    Status(status::StatusArgs),
    /// Load one RPC and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Time discovery changes of a large service through to the balancer, and its memory.
    BenchDiscovery(bench::scale::DiscoveryArgs),
    /// What traffic management costs (routed vs plain RPS) and how fast a split moves.
    BenchRouting(bench::routing::RoutingArgs),
    /// Show a service's discovery chain (routes, splits, subsets, failover) as
    /// the mesh client compiles it, and which target a given call would take.
    Chain(chain::ChainArgs),
    /// Run one service in this process.
    Serve(serve::ServeArgs),
    /// gRPC health check of one server (exit 0 only when SERVING).
    Health(health::HealthArgs),
    /// Write a Connect certificate of an identity (ca.pem, cert.pem, key.pem) for grpcurl.
    Cert(cert::CertArgs),
    /// Consul ACLs: `mesh acl bootstrap` creates the mesh's policies and tokens.
    Acl(acl::AclArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mesh: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Env(args) => local::command::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchDiscovery(args) => bench::scale::run(args).await,
            Command::BenchRouting(args) => bench::routing::run(args).await,
            Command::Chain(args) => chain::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Health(args) => health::run(args).await,
            Command::Cert(args) => cert::run(args).await,
            Command::Acl(args) => acl::run(args).await,
        }
    });
    // Background tasks (Consul watches, connections) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mesh: {error:#}");
            ExitCode::FAILURE
        }
    }
}
