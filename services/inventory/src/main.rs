//! The `inventory` binary: parses flags, sets up logging, serves.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = inventory::Config::parse();
    let telemetry = mesh::telemetry::init(&inventory::IDENTITY, &config.service);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("inventory: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(inventory::run(config));
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let error = anyhow::Error::from(error);
            tracing::error!(error = format!("{error:#}"), "inventory stopped");
            eprintln!("inventory: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
