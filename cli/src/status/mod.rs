//! `mesh status [--watch]`: every registered instance (Consul's own service
//! aside) with its health, as a table, and under it how many orders wait
//! for an operator (read from orders' metrics, see [`parked`]) and the
//! events path: broker, outbox backlog, consumer lag (see [`events`]). Exit 0 when
//! no instance is critical, 1 when one is, 2 when Consul cannot be asked.

mod events;
mod parked;
mod scrape;
mod table;

use std::{process::ExitCode, time::Duration};

use mesh_cli::consul_settings::{self as settings, Holder};

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

    /// The Consul agent to ask (a read-only token is enough: service:read
    /// and node:read on everything). None given: in a checkout where `mesh
    /// up` runs, its agent with the read-only token.
    #[command(flatten)]
    consul: mesh::config::ConsulArgs,
}

/// Prints the table once, or keeps redrawing it with `--watch`.
pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (config, source) = settings::resolve_here(&args.consul, Holder::ReadOnly)?;
    let api = ConsulApi::new(&config);
    if !args.watch {
        return Ok(match rows(&api).await {
            Ok(rows) => {
                let parked = parked::line(&api).await.unwrap_or_default();
                let events = events::line(&api).await.unwrap_or_default();
                crate::output::print(&format!("{}{parked}{events}", frame(&rows, &api)));
                exit_code(&rows)
            }
            Err(error) => {
                eprintln!("mesh status: {error}");
                if let Some(hint) = source.hint() {
                    eprintln!("{hint}");
                } else if matches!(error, ApiError::Unreachable { .. }) {
                    eprintln!(
                        "(set CONSUL_HTTP_ADDR or --consul-addr to the agent's HTTP address)"
                    );
                }
                ExitCode::from(NO_CONSUL)
            }
        });
    }
    let mut signals = StopSignals::install()?;
    loop {
        let text = match rows(&api).await {
            Ok(rows) => {
                let parked = parked::line(&api).await.unwrap_or_default();
                let events = events::line(&api).await.unwrap_or_default();
                format!("{}{parked}{events}", frame(&rows, &api))
            }
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

fn frame(rows: &[Row], api: &ConsulApi) -> String {
    if rows.is_empty() && !api.config().has_token() {
        // With ACLs default-deny, the anonymous token sees nothing at all.
        "no services registered in Consul (or none visible without a token: with ACLs on, set \
         CONSUL_HTTP_TOKEN_FILE to a token with service:read and node:read)\n"
            .to_owned()
    } else if rows.is_empty() {
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
