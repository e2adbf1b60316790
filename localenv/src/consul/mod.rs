//! A local Consul agent (`consul agent -dev`, everything on loopback) run
//! from the one configuration ([`config`]), in one of two postures:
//!
//! - [`Posture::Secure`] (what `mesh up` runs unless told otherwise): ACLs
//!   on with `default_policy = "deny"`, the API on HTTPS only with a
//!   certificate from `consul tls`, then — once it has a leader — the mesh's
//!   policies and one token per holder ([`crate::acl`]);
//! - [`Posture::Plain`]: ACLs off, plain HTTP. Anyone who reaches it can read
//!   and change everything and get a Connect certificate for any name.
//!
//! What it writes, under its folder: `consul/agent.json` (the configuration,
//! 0600: it holds the management token), `consul/tls/` (the CA and the
//! agent's certificate), `secrets/<holder>.token` (0600 in a 0700 folder).
//! Existing files are kept, so the CA and the tokens survive a restart (the
//! dev agent itself forgets everything).

pub mod config;
mod tls;

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    time::Duration,
};

use self::config::{Ports, Security};
use crate::{
    acl::{self, Issued, PolicySource},
    secrets, Cancel, ConsulCalls, ConsulDescription, Error, ProcessSpec, Stopped, Supervised,
};

/// How long a stopping agent gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The token files of the agent itself, besides those of [`acl::TOKENS`].
const MASTER: &str = "master";
const AGENT: &str = "agent";

/// How the agent is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posture {
    /// ACLs default-deny, HTTPS only, the mesh's policies and tokens.
    Secure,
    /// ACLs off, plain HTTP.
    Plain,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ConsulOptions {
    /// The `consul` program.
    pub binary: PathBuf,
    /// Secure or plain.
    pub posture: Posture,
    /// The folder of everything it writes (`consul/`, `secrets/`).
    pub dir: PathBuf,
    /// The API's port (a free one when `None`).
    pub api_port: Option<u16>,
    /// Where its output goes (default `<dir>/consul/consul.log`).
    pub log: Option<PathBuf>,
    /// Its node name (default: Consul's, the host name).
    pub node_name: Option<String>,
    /// Whether to serve the web UI.
    pub ui: bool,
    /// `-log-level` (default: Consul's, `info`).
    pub log_level: Option<String>,
    /// How long it may take to elect itself leader.
    pub ready_timeout: Duration,
}

impl ConsulOptions {
    /// An agent of `posture` from `binary`, writing under `dir`, the UI on,
    /// 30 s to become ready.
    pub fn new(binary: impl Into<PathBuf>, posture: Posture, dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            posture,
            dir: dir.into(),
            api_port: None,
            log: None,
            node_name: None,
            ui: true,
            log_level: None,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// Where to reach the agent: what a client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://127.0.0.1:<port>` or `https://…`.
    pub url: String,
    /// The CA to trust (secure posture).
    pub ca_file: Option<PathBuf>,
    /// The management token's file (secure posture).
    pub token_file: Option<PathBuf>,
}

/// A Consul agent this engine started (and so stops: dropping it kills and
/// reaps it).
#[derive(Debug)]
pub struct LocalConsul {
    process: Supervised,
    options: ConsulOptions,
    ports: Ports,
    ca_file: Option<PathBuf>,
}

impl LocalConsul {
    /// Writes its configuration (and in the secure posture its certificates
    /// and management tokens) and starts it. Returns at once:
    /// [`LocalConsul::wait_ready`] waits for it. Fails if the given API port
    /// is taken.
    pub fn spawn(options: ConsulOptions) -> Result<Self, Error> {
        if let Some(port) = options.api_port {
            if TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(300),
            )
            .is_ok()
            {
                return Err(Error::PortTaken { port });
            }
        }
        let ports = Ports::choose(options.api_port)?;
        let security = match options.posture {
            Posture::Plain => None,
            Posture::Secure => {
                let files = tls::ensure(&options.binary, &options.dir.join("consul/tls"))?;
                let secrets_dir = secrets_dir(&options.dir);
                Some(Security {
                    master_token: secrets::existing_or_new(&secrets::token_path(
                        &secrets_dir,
                        MASTER,
                    ))?,
                    agent_token: secrets::existing_or_new(&secrets::token_path(
                        &secrets_dir,
                        AGENT,
                    ))?,
                    ca_file: files.ca_file,
                    cert_file: files.cert_file,
                    key_file: files.key_file,
                })
            }
        };
        let config_file = options.dir.join("consul/agent.json");
        let config = config::agent_config(&ports, options.node_name.as_deref(), security.as_ref());
        secrets::write(&config_file, &format!("{config:#}"))?;
        let log = options
            .log
            .clone()
            .unwrap_or_else(|| options.dir.join("consul/consul.log"));
        let mut args = vec!["agent".to_owned(), "-dev".to_owned()];
        if options.ui {
            args.push("-ui".to_owned());
        }
        if let Some(level) = &options.log_level {
            args.extend(["-log-level".to_owned(), level.clone()]);
        }
        args.extend(["-config-file".to_owned(), config_file.display().to_string()]);
        let process =
            Supervised::spawn(ProcessSpec::new("consul", &options.binary, log).args(args))?;
        Ok(Self {
            process,
            ca_file: security.map(|security| security.ca_file),
            options,
            ports,
        })
    }

    /// Waits until it has elected itself leader (asking through `consul`, a
    /// client of [`LocalConsul::endpoint`]); in the secure posture, then
    /// creates the mesh's policies and tokens. Fails with the end of its log
    /// if it exits, after the ready timeout, or when `cancel` is set.
    pub fn wait_ready(
        &mut self,
        consul: &dyn ConsulCalls,
        cancel: &Cancel,
    ) -> Result<Vec<Issued>, Error> {
        let secure = self.options.posture == Posture::Secure;
        let mut leader = || match consul.get("/v1/status/leader") {
            Ok(serde_json::Value::String(leader)) if !leader.is_empty() => {
                // A new leader answers ACL calls "in legacy mode" (500) for a
                // moment after its election: the bootstrap waits that out.
                if secure {
                    consul
                        .get("/v1/acl/policies")
                        .map(drop)
                        .map_err(|error| format!("ACLs not ready yet ({error})"))?;
                }
                // The Connect CA sets its first root up just after the
                // election; until the agent's own cache holds it, a leaf
                // request answers 500 "CA root is nil".
                match consul.get("/v1/agent/connect/ca/roots") {
                    Ok(roots) if has_active_root(&roots) => Ok(()),
                    Ok(_) => Err("the Connect CA has no root yet".to_owned()),
                    Err(error) => Err(format!("the Connect CA is not ready yet ({error})")),
                }
            }
            Ok(other) => Err(format!("no leader yet ({other})")),
            Err(error) => Err(error.to_string()),
        };
        self.process
            .wait_ready(&mut leader, self.options.ready_timeout, cancel)?;
        match self.options.posture {
            Posture::Plain => Ok(Vec::new()),
            Posture::Secure => acl::bootstrap(
                consul,
                &secrets_dir(&self.options.dir),
                PolicySource::Shipped,
            ),
        }
    }

    /// Kills it (its state is lost, as on a real crash) and starts it again
    /// on the same ports, then waits as [`LocalConsul::wait_ready`] does.
    pub fn restart(
        &mut self,
        consul: &dyn ConsulCalls,
        cancel: &Cancel,
    ) -> Result<Vec<Issued>, Error> {
        self.kill()?;
        self.process = Supervised::spawn(self.process.spec().clone())?;
        self.wait_ready(consul, cancel)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Result<(), Error> {
        self.process.kill().map(drop)
    }

    /// SIGTERM, up to 10 s, SIGKILL; reaps it.
    pub fn stop(&mut self) -> Result<Stopped, Error> {
        self.process.stop(STOP_GRACE)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Secure or plain.
    pub fn posture(&self) -> Posture {
        self.options.posture
    }

    /// Its ports.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// `127.0.0.1:<api port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.ports.api)
    }

    /// `http://127.0.0.1:<port>`, or `https://…` in the secure posture.
    pub fn url(&self) -> String {
        let scheme = match self.options.posture {
            Posture::Secure => "https",
            Posture::Plain => "http",
        };
        format!("{scheme}://{}", self.address())
    }

    /// How to reach it with full rights.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            url: self.url(),
            ca_file: self.ca_file.clone(),
            token_file: self.token_file(MASTER),
        }
    }

    /// The CA that signed its certificate (secure posture).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The folder of the token files (secure posture).
    pub fn secrets_dir(&self) -> Option<PathBuf> {
        (self.options.posture == Posture::Secure).then(|| secrets_dir(&self.options.dir))
    }

    /// The token file of `holder` (`master`, `agent`, `users`, `mesh-read`…;
    /// secure posture).
    pub fn token_file(&self, holder: &str) -> Option<PathBuf> {
        self.secrets_dir()
            .map(|dir| secrets::token_path(&dir, holder))
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// What other commands need to find it: address, CA, every token file.
    pub fn description(&self) -> ConsulDescription {
        let holders = [MASTER, AGENT]
            .into_iter()
            .chain(acl::TOKENS.iter().map(|token| token.name));
        ConsulDescription {
            url: self.url(),
            ca_file: self.ca_file.clone(),
            tokens: holders
                .filter_map(|holder| Some((holder.to_owned(), self.token_file(holder)?)))
                .collect(),
            pid: Some(self.pid()),
        }
    }
}

fn secrets_dir(dir: &Path) -> PathBuf {
    dir.join("secrets")
}
/// Whether an answer of `/v1/agent/connect/ca/roots` names an active root
/// that is among its roots.
fn has_active_root(roots: &serde_json::Value) -> bool {
    let Some(active) = roots["ActiveRootID"].as_str().filter(|id| !id.is_empty()) else {
        return false;
    };
    roots["Roots"]
        .as_array()
        .is_some_and(|all| all.iter().any(|root| root["ID"].as_str() == Some(active)))
}

#[cfg(test)]
mod tests {
    use super::has_active_root;
    use serde_json::json;

    #[test]
    fn only_an_active_root_among_the_roots_counts() {
        let ready = json!({"ActiveRootID": "a1", "Roots": [{"ID": "a1"}]});
        assert!(has_active_root(&ready));
        // What an agent answers while its CA is being set up.
        assert!(!has_active_root(
            &json!({"ActiveRootID": "", "Roots": null})
        ));
        assert!(!has_active_root(
            &json!({"ActiveRootID": "a1", "Roots": []})
        ));
        assert!(!has_active_root(
            &json!({"ActiveRootID": "a2", "Roots": [{"ID": "a1"}]})
        ));
    }
}
