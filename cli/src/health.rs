//! `mesh health ADDR [--service NAME]`: one `grpc.health.v1.Health/Check`,
//! for container healthchecks (exit 0 only when SERVING).

use std::{process::ExitCode, time::Duration};

use tonic::transport::Endpoint;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// The whole check (connect included) must finish within this.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Exit code when the server answered with another status than SERVING.
const NOT_SERVING: u8 = 1;
/// Exit code when there was no answer (refused, timed out, unknown service…).
const NO_ANSWER: u8 = 2;

/// `mesh health` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct HealthArgs {
    /// The server: `host:port` (or `http://host:port`).
    addr: String,

    /// The service to ask about; empty means the whole server.
    #[arg(long, default_value = "")]
    service: String,
}

/// Prints the status (or why there is none); exit 0 only for SERVING,
/// 1 for any other status, 2 when the server gave no answer.
pub(crate) async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    match tokio::time::timeout(TIMEOUT, check(&args.addr, &args.service)).await {
        Ok(Ok(ServingStatus::Serving)) => {
            crate::output::print_line("SERVING");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(status)) => {
            crate::output::print_line(status.as_str_name());
            Ok(ExitCode::from(NOT_SERVING))
        }
        Ok(Err(reason)) => {
            eprintln!("mesh health {}: {reason}", args.addr);
            Ok(ExitCode::from(NO_ANSWER))
        }
        Err(_) => {
            eprintln!("mesh health {}: no answer within {TIMEOUT:?}", args.addr);
            Ok(ExitCode::from(NO_ANSWER))
        }
    }
}

async fn check(addr: &str, service: &str) -> Result<ServingStatus, String> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let channel = Endpoint::from_shared(uri)
        .map_err(|error| format!("not an address: {error}"))?
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect()
        .await
        .map_err(|error| format!("cannot connect: {}", discovery::error_chain(&error)))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}
