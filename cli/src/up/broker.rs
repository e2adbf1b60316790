//! `mesh up`'s message broker: a `redis-server` (the default broker of the
//! mesh's events, docs/EVENTS.md) started by the `localenv` engine, its
//! append-only file in `<state>/broker/`, on a free loopback port. Unless
//! `--insecure-consul`, it requires a password, kept in
//! `<state>/secrets/broker.password` (mode 0600) and handed to orders and
//! shipping as a file, like their Consul tokens: through their environment
//! (`MESH_BROKER_URL`, `MESH_BROKER_PASSWORD_FILE`), never their command line.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use localenv::{
    brokers::redis::{LocalRedis, RedisConfig},
    secrets, Cancel,
};
use tokio::process::Command;

/// How long the broker may take to start (it replays its append-only file).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it gets to finish its append-only file when stopped.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Every broker variable an instance could inherit.
const BROKER_ENVIRONMENT: [&str; 5] = [
    "MESH_BROKER_URL",
    "MESH_BROKER_PASSWORD_FILE",
    "MESH_BROKER_USERNAME",
    "MESH_BROKER_CACERT",
    "MESH_BROKER_SERVICE",
];

/// What each instance is told about the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildBroker {
    /// `redis://127.0.0.1:<port>`.
    pub(crate) url: String,
    /// The password's file, when it has one.
    pub(crate) password_file: Option<PathBuf>,
}

impl ChildBroker {
    /// Sets the broker variables of `command` (exactly these, nothing
    /// inherited).
    pub(crate) fn apply(&self, command: &mut Command) {
        for variable in BROKER_ENVIRONMENT {
            command.env_remove(variable);
        }
        command.env("MESH_BROKER_URL", &self.url);
        if let Some(file) = &self.password_file {
            command.env("MESH_BROKER_PASSWORD_FILE", file);
        }
    }
}

/// The Consul service ID of `mesh up`'s broker.
pub(crate) const REGISTRATION_ID: &str = "mesh-broker-1";

impl ChildBroker {
    /// Its Consul registration: service [`events::CONSUL_SERVICE`] with
    /// `Meta.scheme`, and a TCP check — what services given no
    /// `--broker-url` find it by, and what `mesh status` lists.
    pub(crate) fn registration(&self, port: u16) -> serde_json::Value {
        serde_json::json!({
            "ID": REGISTRATION_ID,
            "Name": events::CONSUL_SERVICE,
            "Address": "127.0.0.1",
            "Port": port,
            "Meta": { "scheme": "redis" },
            "Check": {
                "Name": "redis-server accepts connections",
                // It answered PING before it was registered: not critical
                // until the first check runs.
                "Status": "passing",
                "TCP": format!("127.0.0.1:{port}"),
                "Interval": "5s",
                "Timeout": "2s",
                "DeregisterCriticalServiceAfter": "10m",
            },
        })
    }
}

/// The running broker.
#[derive(Debug)]
pub(crate) struct Broker {
    /// The server.
    pub(crate) server: LocalRedis,
    /// How instances reach it.
    pub(crate) child: ChildBroker,
    port: u16,
}

impl Broker {
    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

/// Starts the broker (data in `<state>/broker`, a password unless
/// `with_password` is false).
pub(crate) async fn start(state_dir: &Path, with_password: bool) -> anyhow::Result<Broker> {
    let program = RedisConfig::find_program()?;
    let port = localenv::ports::free_port()?;
    let mut config = RedisConfig::new(program, port, state_dir.join("broker"));
    let password_file = if with_password {
        let file = state_dir.join("secrets").join("broker.password");
        if secrets::read(&file)?.is_none() {
            let password = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            secrets::write(&file, &password)?;
        }
        config.password_file = Some(file.clone());
        Some(file)
    } else {
        None
    };
    let server =
        tokio::task::spawn_blocking(move || config.start(START_TIMEOUT, &Cancel::default()))
            .await
            .context("the broker's start was interrupted")??;
    Ok(Broker {
        server,
        child: ChildBroker {
            url: format!("redis://127.0.0.1:{port}"),
            password_file,
        },
        port,
    })
}

impl Broker {
    /// Its process id.
    pub(crate) fn pid(&mut self) -> u32 {
        self.server.process().pid()
    }

    /// SIGTERM (it finishes its append-only file), SIGKILL after 10 s.
    pub(crate) async fn stop(self) -> anyhow::Result<localenv::Stopped> {
        let server = self.server;
        Ok(tokio::task::spawn_blocking(move || server.stop(STOP_GRACE)).await??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registration_names_the_scheme_and_checks_the_port() {
        let broker = ChildBroker {
            url: "redis://127.0.0.1:6390".to_owned(),
            password_file: None,
        };
        let registration = broker.registration(6390);
        assert_eq!(registration["Name"], "mesh-broker");
        assert_eq!(registration["Meta"]["scheme"], "redis");
        assert_eq!(registration["Port"], 6390);
        assert_eq!(registration["Check"]["TCP"], "127.0.0.1:6390");
        assert_eq!(registration["Check"]["Status"], "passing");
    }

    #[test]
    fn instances_get_the_url_and_the_password_file_and_nothing_inherited() {
        let broker = ChildBroker {
            url: "redis://127.0.0.1:6390".to_owned(),
            password_file: Some(PathBuf::from("/state/secrets/broker.password")),
        };
        let mut command = Command::new("true");
        command.env("MESH_BROKER_USERNAME", "someone");
        broker.apply(&mut command);
        let environment: Vec<(String, Option<String>)> = command
            .as_std()
            .get_envs()
            .map(|(name, value)| {
                (
                    name.to_string_lossy().into_owned(),
                    value.map(|value| value.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(environment.contains(&(
            "MESH_BROKER_URL".to_owned(),
            Some("redis://127.0.0.1:6390".to_owned())
        )));
        assert!(environment.contains(&(
            "MESH_BROKER_PASSWORD_FILE".to_owned(),
            Some("/state/secrets/broker.password".to_owned())
        )));
        assert!(environment.contains(&("MESH_BROKER_USERNAME".to_owned(), None)));
    }
}
