//! `mesh status [--watch]`: every registered instance (Consul's own service
//! aside) with its health, as a table. Exit 0 when nothing is critical, 1
//! when something is, 2 when Consul cannot be asked.

mod table;

use std::{process::ExitCode, time::Duration};

use crate::{
    consul::{ApiError, ConsulApi},
    signals::StopSignals,
};
use table::{Health, Row};

/// `--watch` refresh period.
const REFRESH: Duration = Duration::from_secs(2);
/// Exit code when an instance is critical.
const CRITICAL: u8 = 1;
/// Exit code when Consul cannot be asked.
const NO_CONSUL: u8 = 2;

/// `mesh status` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
    /// Redraw every 2 s until Ctrl-C (then exit 0).
    #[arg(long)]
    watch: bool,

    /// The Consul agent to ask.
    #[arg(long = "consul-addr", env = "CONSUL_HTTP_ADDR", default_value = discovery::DEFAULT_ADDRESS)]
    consul_addr: String,

    /// ACL token for Consul.
    #[arg(
        long = "consul-token",
        env = "CONSUL_HTTP_TOKEN",
        hide_env_values = true
    )]
    consul_token: Option<String>,
}

/// Prints the table once, or keeps redrawing it with `--watch`.
pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let api = ConsulApi::new(&args.consul_addr, args.consul_token.as_deref())?;
    if !args.watch {
        return Ok(match rows(&api).await {
            Ok(rows) => {
                crate::output::print(&frame(&rows));
                exit_code(&rows)
            }
            Err(error) => {
                eprintln!("mesh status: {error}");
                eprintln!("(set CONSUL_HTTP_ADDR or --consul-addr to the agent's HTTP address)");
                ExitCode::from(NO_CONSUL)
            }
        });
    }
    let mut signals = StopSignals::install()?;
    loop {
        let text = match rows(&api).await {
            Ok(rows) => frame(&rows),
            Err(error) => format!("{error}\n"),
        };
        // Clear the screen, cursor home, then the frame.
        let screen = format!(
            "\x1b[2J\x1b[H{text}\nevery {}s from {} — Ctrl-C to quit\n",
            REFRESH.as_secs(),
            api.address()
        );
        if !crate::output::print(&screen) {
            // Nobody reads any more.
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            () = tokio::time::sleep(REFRESH) => {}
            _ = signals.recv() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Every instance of every service but `consul`.
async fn rows(api: &ConsulApi) -> Result<Vec<Row>, ApiError> {
    let mut rows = Vec::new();
    for service in api.service_names().await? {
        if service == "consul" {
            continue;
        }
        rows.extend(
            api.health(&service, false)
                .await?
                .iter()
                .map(Row::from_entry),
        );
    }
    Ok(rows)
}

fn frame(rows: &[Row]) -> String {
    if rows.is_empty() {
        "no services registered in Consul\n".to_owned()
    } else {
        table::render(rows)
    }
}

fn exit_code(rows: &[Row]) -> ExitCode {
    if rows.iter().any(|row| row.status == Health::Critical) {
        ExitCode::from(CRITICAL)
    } else {
        ExitCode::SUCCESS
    }
}
