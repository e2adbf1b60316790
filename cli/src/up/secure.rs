//! `mesh up --secure`: the local agent in Consul's production posture — ACLs
//! on with `default_policy = "deny"`, its HTTP API on HTTPS only — with
//! certificates from Consul's own `consul tls ca create` / `consul tls cert
//! create -server`, a master token, and the mesh's policies and tokens
//! (`mesh acl bootstrap`). Everything lives in the state folder:
//!
//! - `consul/tls/`: the CA (`consul-agent-ca.pem`, its key) and the agent's
//!   certificate (`dc1-server-consul-0.pem`, its key);
//! - `consul/secure.json`: the agent's ACL, TLS and port settings (0600: it
//!   holds the master token);
//! - `secrets/`: one token file per holder (0700 folder, 0600 files):
//!   `master`, `agent`, `mesh-read` and one per service.
//!
//! Files that exist are kept, so the CA and the tokens stay the same from one
//! `mesh up --secure` to the next (the dev agent itself forgets everything).

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::acl::secrets;

/// The agent's certificate files as `consul tls cert create -server -dc dc1` names them.
const SERVER_CERT: &str = "dc1-server-consul-0.pem";
const SERVER_KEY: &str = "dc1-server-consul-0-key.pem";
/// The CA files as `consul tls ca create` names them.
const CA_CERT: &str = "consul-agent-ca.pem";
const CA_KEY: &str = "consul-agent-ca-key.pem";

/// Where `--secure` keeps what it made.
#[derive(Debug, Clone)]
pub(crate) struct SecureLayout {
    /// The CA that signed the agent's certificate (`CONSUL_CACERT`).
    pub(crate) ca_file: PathBuf,
    /// The agent's configuration file.
    pub(crate) config_file: PathBuf,
    /// The token files.
    pub(crate) secrets: PathBuf,
}

impl SecureLayout {
    /// The token file of `name` (`master`, `users`, `mesh-read`…).
    pub(crate) fn token_file(&self, name: &str) -> PathBuf {
        secrets::token_path(&self.secrets, name)
    }
}

/// Certificates, tokens and the agent's configuration for an HTTPS API on
/// `127.0.0.1:<https_port>` (other ports free ones). Fails if something
/// already listens there: `--secure` always runs its own agent.
pub(crate) async fn prepare(
    consul: &Path,
    state_dir: &Path,
    https_port: u16,
) -> anyhow::Result<SecureLayout> {
    if TcpStream::connect_timeout(
        &([127, 0, 0, 1], https_port).into(),
        Duration::from_millis(500),
    )
    .is_ok()
    {
        bail!(
            "something already listens on 127.0.0.1:{https_port}: --secure starts an agent of its \
             own there; stop it, or pick another port with --consul-addr 127.0.0.1:<port>"
        );
    }
    let tls = state_dir.join("consul/tls");
    std::fs::create_dir_all(&tls).with_context(|| format!("cannot create {}", tls.display()))?;
    if !tls.join(CA_CERT).is_file() || !tls.join(CA_KEY).is_file() {
        run_in(consul, &tls, &["tls", "ca", "create"]).await?;
    }
    if !tls.join(SERVER_CERT).is_file() || !tls.join(SERVER_KEY).is_file() {
        run_in(
            consul,
            &tls,
            &["tls", "cert", "create", "-server", "-dc", "dc1"],
        )
        .await?;
    }
    let layout = SecureLayout {
        ca_file: tls.join(CA_CERT),
        config_file: state_dir.join("consul/secure.json"),
        secrets: state_dir.join("secrets"),
    };
    let master = existing_or_new(&layout.token_file("master"))?;
    let agent = existing_or_new(&layout.token_file("agent"))?;
    let ports = crate::consul::free_ports(5, https_port)?;
    let config = json!({
        "acl": {
            "enabled": true,
            "default_policy": "deny",
            "down_policy": "extend-cache",
            "tokens": {"master": master, "agent": agent},
        },
        "ports": {
            "http": -1,
            "https": https_port,
            "dns": ports[0],
            "grpc": ports[1],
            "serf_lan": ports[2],
            "serf_wan": ports[3],
            "server": ports[4],
        },
        "ca_file": layout.ca_file,
        "cert_file": tls.join(SERVER_CERT),
        "key_file": tls.join(SERVER_KEY),
        "verify_incoming": false,
    });
    secrets::write(
        &layout.config_file,
        &serde_json::to_string_pretty(&config).context("the agent configuration")?,
    )?;
    Ok(layout)
}

/// The token in `path`, or a new one written there.
fn existing_or_new(path: &Path) -> anyhow::Result<String> {
    if let Some(token) = secrets::read(path)? {
        return Ok(token);
    }
    let token = uuid::Uuid::new_v4().to_string();
    secrets::write(path, &token)?;
    Ok(token)
}

/// Runs `consul <args>` in `dir`, failing with its output.
async fn run_in(consul: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(consul)
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {}", consul.display()))?;
    if !output.status.success() {
        bail!(
            "`consul {}` failed in {}: {}{}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
