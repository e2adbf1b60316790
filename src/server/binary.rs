//! A service as a program ([`Runnable`]): parse the service's flags, install
//! telemetry, run the service on a multi-thread runtime, flush the last
//! spans, and turn the outcome into an exit code with the error's whole cause
//! chain on standard error. Each service binary's `main` and `mesh serve
//! <service>` run the same code.

use std::{ffi::OsString, fmt, future::Future, process::ExitCode};

use futures::future::LocalBoxFuture;

use super::error::ServeError;
use crate::config::ServiceConfig;
use crate::service::ServiceIdentity;

/// A service as a program: who it is and how it runs from a command line.
/// Each service crate declares one (`users::SERVICE`):
///
/// ```ignore
/// pub const SERVICE: Runnable = Runnable {
///     identity: &IDENTITY,
///     serve: |args| Box::pin(mesh::server::serve_args(&IDENTITY, args, run)),
///     example: Some(ExampleCall { method: "GetUser", body: r#"{"user_id":"{user_id}"}"# }),
/// };
/// ```
///
/// Its binary's `main` is `SERVICE.main()`; `mesh serve <name>` finds it by
/// name in the CLI's list of services and runs `serve` in its own runtime.
#[derive(Clone, Copy)]
pub struct Runnable {
    /// Its names, kind and port.
    pub identity: &'static ServiceIdentity,
    /// Parses the service's flags from `args` (the program's name first)
    /// and serves until SIGTERM/SIGINT (see [`serve_args`]).
    pub serve: fn(Vec<OsString>) -> LocalBoxFuture<'static, Result<(), ServeError>>,
    /// A call worth trying on a fresh `mesh up` (its banner prints it as a
    /// grpcurl command), or `None`.
    pub example: Option<ExampleCall>,
}

/// One of a service's own methods with a JSON body that the demo shop makes
/// interesting. In `body`, `{user_id}` and `{sku}` stand for the demo
/// shop's user and item, `{request_id}` for a fresh UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExampleCall {
    /// The method's name in the service, e.g. `GetUser`.
    pub method: &'static str,
    /// The request as JSON, with the placeholders above.
    pub body: &'static str,
}

impl ExampleCall {
    /// `body` with the placeholders filled in.
    pub fn body_for(&self, user_id: &str, sku: &str, request_id: &str) -> String {
        self.body
            .replace("{user_id}", user_id)
            .replace("{sku}", sku)
            .replace("{request_id}", request_id)
    }
}

impl fmt::Debug for Runnable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runnable")
            .field("identity", self.identity)
            .field("example", &self.example)
            .finish_non_exhaustive()
    }
}

impl Runnable {
    /// The whole `main` of the service's binary: `fn main() -> ExitCode {
    /// users::SERVICE.main() }`.
    pub fn main(&self) -> ExitCode {
        let name = self.identity.name;
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("{name}: cannot start the async runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on((self.serve)(std::env::args_os().collect())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{name}: {}", discovery::error_chain(&error));
                ExitCode::FAILURE
            }
        }
    }
}

/// Parses the service's flags `C` from `args` (the program's name first;
/// `--help`, `--version` and a wrong flag print and exit as clap does), then
/// [`run_service`].
pub async fn serve_args<C, F>(
    identity: &'static ServiceIdentity,
    args: Vec<OsString>,
    run: impl FnOnce(C) -> F,
) -> Result<(), ServeError>
where
    C: ServiceConfig,
    F: Future<Output = Result<(), ServeError>>,
{
    let config = C::parse_from(args);
    run_service(identity, config, run).await
}

/// Installs telemetry, runs `run(config)` until it returns (SIGTERM/SIGINT
/// and the drain, or an error, logged with its causes), then flushes the
/// spans not exported yet.
async fn run_service<C, F>(
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
