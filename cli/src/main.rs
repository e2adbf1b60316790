//! `mesh`: the command line of the mesh.
//!
//! - `mesh up`: Consul (found, or started with ACLs default-deny and HTTPS),
//!   every service as supervised processes, demo data, ready-to-paste grpcurl
//!   commands;
//! - `mesh env`: the local environment alone (a Consul agent), printed as
//!   variables to use, until a stop signal (what the scripts run);
//! - `mesh status`: every registered instance and its health, from Consul;
//! - `mesh chain <service>`: its discovery chain as the client compiles it,
//!   and which target a given call takes and why;
//! - `mesh serve <service>`: one service in this process (what `mesh up` runs);
//! - `mesh health ADDR`: a gRPC health check for container healthchecks;
//! - `mesh cert IDENTITY --out DIR`: a Connect certificate for grpcurl.
//! - `mesh acl bootstrap`: the mesh's ACL policies and tokens in a Consul with ACLs on.
//! - `mesh token USER_ID`: a short-lived bearer token for the local API gateway.
//!
//! The benchmark lab is its own binary, `mesh-bench` (`bench/`); `mesh bench`,
//! `mesh bench-discovery` and `mesh bench-routing` still run it (hidden, see [`lab`]).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod acl;
mod cert;
mod chain;
mod consul;
mod health;
mod intentions;
mod lab;
mod local;
mod output;
mod process;
mod serve;
mod signals;
mod status;
mod token;
mod tools;
mod up;

use std::{process::ExitCode, time::Duration};

use clap::Parser;

/// The `mesh` command.
#[derive(Parser, Debug)]
#[command(
    name = "mesh",
    version,
    about = "A gRPC service mesh on Consul: run it, watch it, operate it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of `serve`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Operate(Operate),
    /// `mesh-bench load …` (the benchmark lab's own binary).
    #[command(hide = true, disable_help_flag = true)]
    Bench(lab::LabArgs),
    /// `mesh-bench discovery …` (the benchmark lab's own binary).
    #[command(hide = true, disable_help_flag = true)]
    BenchDiscovery(lab::LabArgs),
    /// `mesh-bench routing …` (the benchmark lab's own binary).
    #[command(hide = true, disable_help_flag = true)]
    BenchRouting(lab::LabArgs),
}

/// What an operator runs.
// Parsed once at start-up: the size of `serve`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
enum Operate {
    /// Run Consul (unless one answers) and every service, supervised, with demo data.
    Up(up::UpArgs),
    /// Run the local environment alone (a Consul agent, secure unless told
    /// otherwise), print the variables to use it, stop it on Ctrl-C.
    Env(local::command::EnvArgs),
    /// Show every registered instance and its health (exit 1 if any is critical).
    Status(status::StatusArgs),
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
    /// Print a short-lived bearer token for the local API gateway (`mesh up`'s key).
    Token(token::TokenArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Operate(command) => operate(command),
        // The lab's old spellings replace this process (no runtime needed);
        // they return only when that failed.
        Command::Bench(args) => lab::exec(lab::LabCommand::Load, args),
        Command::BenchDiscovery(args) => lab::exec(lab::LabCommand::Discovery, args),
        Command::BenchRouting(args) => lab::exec(lab::LabCommand::Routing, args),
    }
}

fn operate(command: Operate) -> ExitCode {
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
        match command {
            Operate::Up(args) => up::run(args).await,
            Operate::Env(args) => local::command::run(args).await,
            Operate::Status(args) => status::run(args).await,
            Operate::Chain(args) => chain::run(args).await,
            Operate::Serve(args) => serve::run(args).await,
            Operate::Health(args) => health::run(args).await,
            Operate::Cert(args) => cert::run(args).await,
            Operate::Acl(args) => acl::run(args).await,
            Operate::Token(args) => token::run(args).await,
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
