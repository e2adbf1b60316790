//! `mesh token <user_id>`: a short-lived bearer token for the API gateway,
//! signed with the local mesh's token key (`<state-dir>/gateway/`, created
//! by `mesh up`; the private key is mode 0600). Only the gateway of a local
//! mesh trusts it: deployments verify their identity provider's tokens.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use gateway::auth::dev::DevKeys;

/// `mesh token` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct TokenArgs {
    /// The user the token is for (its `sub`): a user id from CreateUser.
    user_id: String,

    /// How long the token is valid (e.g. 15m, 1h).
    #[arg(value_name = "DURATION", long, default_value = "15m",
          value_parser = mesh::config::duration::parser(mesh::config::duration::BareUnit::Seconds, Duration::from_secs(1)))]
    ttl: Duration,

    /// Where `mesh up` keeps its state (the key is in `<state-dir>/gateway/`).
    #[arg(long, default_value = ".mesh")]
    state_dir: PathBuf,

    /// The folder holding `token-signing-key.pem` instead, e.g. the DEV-ONLY
    /// keys of `k8s/overlays/dev/gateway` (also used by docker compose).
    #[arg(long)]
    keys_dir: Option<PathBuf>,
}

/// The folder of the local token key in `state_dir`.
pub(crate) fn keys_dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("gateway")
}

/// Prints the token (nothing else, so that `$(mesh token …)` works).
pub(crate) async fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let user_id = args.user_id.trim();
    anyhow::ensure!(
        !user_id.is_empty()
            && user_id.len() <= gateway::auth::verify::MAX_SUBJECT_BYTES
            && user_id.bytes().all(|b| b.is_ascii_graphic()),
        "the user id must be 1 to {} printable ASCII characters",
        gateway::auth::verify::MAX_SUBJECT_BYTES
    );
    let dir = args
        .keys_dir
        .clone()
        .unwrap_or_else(|| keys_dir(&args.state_dir));
    let keys = DevKeys::at(&dir);
    anyhow::ensure!(
        keys.signing_key.is_file(),
        "no token key in {}: `mesh up` creates it (or give --state-dir or --keys-dir)",
        dir.display()
    );
    let token = keys
        .mint(user_id, args.ttl)
        .with_context(|| format!("cannot sign a token with {}", keys.signing_key.display()))?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
