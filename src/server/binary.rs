//! The whole `main` of a service binary, and of `mesh serve <service>`:
//! parse the service's flags, install telemetry, run the service on a
//! multi-thread runtime, flush the last spans, and turn the outcome into an
//! exit code with the error's whole cause chain on standard error.

use std::{future::Future, process::ExitCode};

use super::ServeError;
use crate::config::ServiceConfig;
use crate::service::ServiceIdentity;

/// Runs a service binary: `fn main() -> ExitCode { mesh::server::main(&IDENTITY, run) }`.
pub fn main<C, F>(identity: &'static ServiceIdentity, run: impl FnOnce(C) -> F) -> ExitCode
where
    C: ServiceConfig,
    F: Future<Output = Result<(), ServeError>>,
{
    let config = C::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{}: cannot start the async runtime: {error}", identity.name);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_service(identity, config, run)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {}", identity.name, discovery::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Installs telemetry, runs `run(config)` until it returns (SIGTERM/SIGINT
/// and the drain, or an error, logged with its causes), then flushes the
/// spans not exported yet. What [`main`] runs, and `mesh serve` inside its
/// own runtime.
pub async fn run_service<C, F>(
    identity: &'static ServiceIdentity,
    config: C,
    run: impl FnOnce(C) -> F,
) -> Result<(), ServeError>
where
    C: ServiceConfig,
    F: Future<Output = Result<(), ServeError>>,
{
    let telemetry = crate::telemetry::init(identity, config.service_args());
    let result = run(config).await;
    if let Err(error) = &result {
        tracing::error!(
            service = identity.name,
            error = discovery::error_chain(error),
            "stopped"
        );
    }
    telemetry.shutdown();
    result
}
