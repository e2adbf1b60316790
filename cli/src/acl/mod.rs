//! `mesh acl bootstrap`: the mesh's ACL policies (one per service, a
//! read-only one, the agent's) and a token for each, in a Consul with ACLs on
//! (`default_policy = "deny"`). Token files, never the tokens, are printed.

mod bootstrap;
pub(crate) mod policies;
pub(crate) mod secrets;

use std::{path::PathBuf, process::ExitCode};

pub(crate) use bootstrap::{bootstrap, Issued};

use crate::consul::ConsulApi;

/// `mesh acl` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct AclArgs {
    #[command(subcommand)]
    command: AclCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AclCommand {
    /// Create or update the mesh's policies and tokens (needs a management
    /// token, e.g. CONSUL_HTTP_TOKEN_FILE=<the bootstrap token's file>).
    Bootstrap(BootstrapArgs),
}

/// `mesh acl bootstrap` arguments.
#[derive(clap::Args, Debug)]
struct BootstrapArgs {
    /// Folder of the token files `<name>.token` (mode 0600). A file that
    /// exists supplies its token's SecretID; the others are written.
    #[arg(long, default_value = ".mesh/secrets")]
    tokens_dir: PathBuf,

    /// Read the policies from `<dir>/users.hcl`, `orders.hcl`, … (e.g. a
    /// mounted ConfigMap) instead of the ones compiled in from
    /// `deploy/consul/acl/`.
    #[arg(long)]
    policies_dir: Option<PathBuf>,

    /// The Consul agent, and a management token.
    #[command(flatten)]
    consul: mesh::config::ConsulArgs,
}

/// Runs `mesh acl …`.
pub(crate) async fn run(args: AclArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AclCommand::Bootstrap(args) => {
            let api = ConsulApi::new(&args.consul.config()?);
            let issued = bootstrap(&api, &args.tokens_dir, args.policies_dir.as_deref()).await?;
            print(&issued);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line per token: its name, file and accessor (never the secret).
pub(crate) fn print(issued: &[Issued]) {
    for token in issued {
        println!(
            "token {:<10} {} ({}, accessor {})",
            token.name,
            token.file.display(),
            token.action,
            token.accessor
        );
    }
}
