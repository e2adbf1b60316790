//! `mesh serve <service> [flags…]`: one service in this process, exactly as
//! its own binary runs it (same flags, same lifecycle). `mesh up` starts
//! every instance this way, so one executable is enough. There is one
//! subcommand per service of [`services::ALL`], made from the list (no
//! per-service code here); the flags after it are the service's own, parsed
//! by the service (`mesh serve users --help` shows them).

use std::{ffi::OsString, process::ExitCode};

use anyhow::Context as _;
use clap::{ArgMatches, Command, FromArgMatches, Subcommand};
use mesh::{server::Runnable, service::ServiceIdentity};
use mesh_cli::services;

/// The argument holding a service's flags, unparsed.
const FLAGS: &str = "flags";

/// `mesh serve` arguments: the service and its own flags.
#[derive(clap::Args, Debug)]
#[command(
    subcommand_value_name = "SERVICE",
    subcommand_help_heading = "Services"
)]
pub(crate) struct ServeArgs {
    #[command(subcommand)]
    service: ServiceCommand,
}

/// One service of [`services::ALL`] and the flags that follow it.
#[derive(Debug)]
struct ServiceCommand {
    service: &'static Runnable,
    flags: Vec<OsString>,
}

/// What `mesh serve --help` says of a service.
fn about(identity: &ServiceIdentity) -> String {
    match identity.grpc_service() {
        Some(grpc_service) => format!("The {} service ({grpc_service})", identity.name),
        None => format!("The {} service (HTTP)", identity.name),
    }
}

impl Subcommand for ServiceCommand {
    fn augment_subcommands(command: Command) -> Command {
        services::ALL.iter().fold(command, |command, service| {
            command.subcommand(
                Command::new(service.identity.name)
                    .about(about(service.identity))
                    // `--help` and every flag go to the service's own parser.
                    .disable_help_flag(true)
                    .disable_version_flag(true)
                    .arg(
                        clap::Arg::new(FLAGS)
                            .num_args(0..)
                            .trailing_var_arg(true)
                            .allow_hyphen_values(true)
                            .value_parser(clap::value_parser!(OsString)),
                    ),
            )
        })
    }

    fn augment_subcommands_for_update(command: Command) -> Command {
        Self::augment_subcommands(command)
    }

    fn has_subcommand(name: &str) -> bool {
        services::find(name).is_some()
    }
}

impl FromArgMatches for ServiceCommand {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let Some((name, matches)) = matches.subcommand() else {
            return Err(clap::Error::new(clap::error::ErrorKind::MissingSubcommand));
        };
        let service = services::find(name)
            .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))?;
        let flags = matches
            .get_many::<OsString>(FLAGS)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        Ok(Self { service, flags })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// Sets up logging and serves until SIGTERM/SIGINT (then drains, exits 0).
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let ServiceCommand { service, flags } = args.service;
    let name = service.identity.name;
    let command_line = std::iter::once(OsString::from(format!("mesh serve {name}")))
        .chain(flags)
        .collect();
    (service.serve)(command_line)
        .await
        .with_context(|| format!("{name} stopped"))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn every_service_is_a_subcommand_whose_flags_stay_its_own() {
        for service in services::ALL {
            let name = service.identity.name;
            let cli = Cli::try_parse_from(["serve", name, "--listen", "127.0.0.1:0", "--help"])
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(cli.serve.service.service.identity, service.identity);
            assert_eq!(
                cli.serve.service.flags,
                ["--listen", "127.0.0.1:0", "--help"]
            );
        }
        let unknown = Cli::try_parse_from(["serve", "carts"]).unwrap_err();
        assert_eq!(unknown.kind(), clap::error::ErrorKind::InvalidSubcommand);
    }
}
