//! The `payments` binary: parses flags, installs logging, serves.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = payments::Config::parse();
    let telemetry = mesh::telemetry::init(&payments::IDENTITY, &config.service);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("payments: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(payments::run(config));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "payments stopped");
            eprintln!("payments: {error}");
            ExitCode::FAILURE
        }
    }
}
