//! The `orders` binary: parses flags, installs logging, serves.

use std::process::ExitCode;

use clap::Parser;
use orders::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    let telemetry = mesh::telemetry::init(&orders::IDENTITY, &config.service);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("orders: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        orders::run(config).await?;
        anyhow::Ok(())
    });
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "orders stopped");
            eprintln!("orders: {error:#}");
            ExitCode::FAILURE
        }
    }
}
