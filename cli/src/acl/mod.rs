//! `mesh acl bootstrap`: the mesh's ACL policies (one per service, a
//! read-only one, the agent's) and a token for each, in a Consul with ACLs on
//! (`default_policy = "deny"`), by the `localenv` engine's bootstrap through
//! our Consul client. Token files, never the tokens, are printed.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use localenv::acl::{Issued, PolicySource};

use mesh_cli::consul_settings::{self as settings, Holder};

use crate::consul::{BlockingCalls, ConsulApi};

/// `mesh acl` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct AclArgs {
    #[command(subcommand)]
    command: AclCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AclCommand {
    /// Create or update the mesh's policies and tokens (needs a management
    /// token, e.g. CONSUL_HTTP_TOKEN_FILE=<the bootstrap token's file>; in a
    /// checkout where `mesh up` runs, its agent and management token).
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
            let (config, _) = settings::resolve_here(&args.consul, Holder::Management)?;
            let calls =
                BlockingCalls::new(ConsulApi::new(&config), tokio::runtime::Handle::current());
            let issued = tokio::task::spawn_blocking(move || {
                let policies = match &args.policies_dir {
                    Some(dir) => PolicySource::Folder(dir),
                    None => PolicySource::Shipped,
                };
                localenv::acl::bootstrap(&calls, &args.tokens_dir, policies)
            })
            .await
            .context("the bootstrap task failed")??;
            print(&issued);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line per token: its name, file and accessor (never the secret).
fn print(issued: &[Issued]) {
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

#[cfg(test)]
mod tests {
    use localenv::acl::{POLICIES, TOKENS};

    #[test]
    fn every_service_has_a_policy_that_writes_itself_only() {
        for service in mesh_cli::services::identities() {
            let token = TOKENS
                .iter()
                .find(|token| token.name == service.name)
                .expect("a token per service");
            let policy = POLICIES
                .iter()
                .find(|policy| policy.name == token.policy)
                .expect("its policy");
            // A gRPC service also reads its intentions (it authorizes inbound
            // connections); an edge accepts none.
            let own = match service.grpc_service() {
                Some(_) => format!("service \"{}\" {{\n  policy     = \"write\"", service.name),
                None => format!("service \"{}\" {{\n  policy = \"write\"\n}}", service.name),
            };
            assert!(policy.rules.contains(&own), "{}", policy.rules);
            assert_eq!(
                policy.rules.matches("\"write\"").count(),
                1,
                "{} writes only itself",
                policy.name
            );
            assert!(policy
                .rules
                .contains("node_prefix \"\" {\n  policy = \"read\""));
        }
    }

    #[test]
    fn the_traffic_policy_writes_the_services_config_entries_and_nothing_else() {
        let traffic = POLICIES
            .iter()
            .find(|policy| policy.name == "mesh-traffic")
            .expect("the traffic policy");
        let rules: Vec<&str> = traffic
            .rules
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .collect();
        let rules = rules.join("\n");
        // Nothing routes to an edge through the mesh: gRPC services only.
        let grpc: Vec<&str> = mesh_cli::services::identities()
            .filter(|identity| identity.grpc_service().is_some())
            .map(|identity| identity.name)
            .collect();
        for service in &grpc {
            let rule = format!("service \"{service}\" {{\n  policy = \"write\"");
            assert!(rules.contains(&rule), "{rules}");
        }
        assert_eq!(
            rules.matches("\"write\"").count(),
            grpc.len(),
            "writes the gRPC services only"
        );
        for broader in ["service_prefix", "operator", "acl", "agent", "key"] {
            assert!(!rules.contains(broader), "{broader} in {rules}");
        }
    }
}
