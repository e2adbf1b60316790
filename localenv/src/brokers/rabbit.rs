//! A RabbitMQ node with its own `epmd`, every path in one folder and every
//! port given (nothing shared with a system-wide node: no init system, no
//! `/var/lib/rabbitmq`). As root the node runs as the `rabbitmq` user
//! (Erlang refuses root's cookie handling otherwise), and the folder is
//! handed to it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use nix::{
    sys::signal::Signal,
    unistd::{chown, Gid, Uid, User},
};

use super::{epmd, system_program, TlsListener};
use crate::{Cancel, Error, ProcessSpec, RunAs, Supervised, TcpProbe};

/// How long a graceful node stop may take before SIGKILL.
const NODE_GRACE: Duration = Duration::from_secs(60);

/// How to run one RabbitMQ node.
#[derive(Debug, Clone)]
pub struct RabbitConfig {
    /// `rabbitmq-server`.
    pub server: PathBuf,
    /// Erlang's `epmd`.
    pub epmd: PathBuf,
    /// Its folder (data, logs, configuration).
    pub dir: PathBuf,
    /// The node's short name (`<name>@localhost`).
    pub node_name: String,
    /// The AMQP port on 127.0.0.1.
    pub amqp_port: u16,
    /// Erlang distribution's port.
    pub dist_port: u16,
    /// Its `epmd`'s port.
    pub epmd_port: u16,
    /// An AMQPS listener besides the plain one.
    pub tls: Option<TlsListener>,
    /// Whom the node runs as (see [`RabbitConfig::run_as_for_us`]).
    pub run_as: Option<RunAs>,
}

impl RabbitConfig {
    /// The installed programs, and the user to run as, for a node in `dir`
    /// on the given ports.
    pub fn new(
        dir: impl Into<PathBuf>,
        node_name: impl Into<String>,
        amqp_port: u16,
        dist_port: u16,
        epmd_port: u16,
    ) -> Result<Self, Error> {
        Ok(Self {
            server: system_program(
                "rabbitmq-server",
                "/usr/lib/rabbitmq/bin/rabbitmq-server",
                "rabbitmq-server",
            )?,
            epmd: epmd()?,
            dir: dir.into(),
            node_name: node_name.into(),
            amqp_port,
            dist_port,
            epmd_port,
            tls: None,
            run_as: Self::run_as_for_us()?,
        })
    }

    /// `None` unless we are root; then the `rabbitmq` user (its package
    /// creates it).
    pub fn run_as_for_us() -> Result<Option<RunAs>, Error> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        match User::from_name("rabbitmq").ok().flatten() {
            Some(user) => Ok(Some(RunAs {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            })),
            None => Err(Error::MissingProgram {
                name: "the rabbitmq user (a node does not run as root)".to_owned(),
                fallback: PathBuf::from("/etc/passwd"),
                package: "rabbitmq-server",
            }),
        }
    }

    fn node_dir(&self) -> PathBuf {
        self.dir.join("node")
    }

    /// The node's log folder.
    pub fn log_dir(&self) -> PathBuf {
        self.node_dir().join("log")
    }

    /// `rabbitmq.conf`'s text.
    pub fn config_text(&self) -> String {
        let mut text = format!(
            "listeners.tcp.1 = 127.0.0.1:{}\nloopback_users = none\n",
            self.amqp_port
        );
        if let Some(tls) = &self.tls {
            text.push_str(&format!(
                "listeners.ssl.1 = 127.0.0.1:{}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
                tls.port,
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            ));
        }
        text
    }

    /// Writes the node's files and returns how to start it.
    pub fn node_spec(&self) -> Result<ProcessSpec, Error> {
        let base = self.node_dir();
        for sub in ["mnesia", "log"] {
            let folder = base.join(sub);
            std::fs::create_dir_all(&folder).map_err(|e| Error::io("cannot create", &folder, e))?;
        }
        let write = |name: &str, text: &str| {
            let path = base.join(name);
            std::fs::write(&path, text).map_err(|e| Error::io("cannot write", &path, e))
        };
        write("enabled_plugins", "[].\n")?;
        write("rabbitmq.conf", &self.config_text())?;
        if let Some(user) = self.run_as {
            chown_tree(&self.dir, user)?;
        }
        let mut spec = ProcessSpec::new(
            "rabbitmq-server",
            &self.server,
            self.dir.join("rabbitmq.log"),
        );
        spec.current_dir = Some(base.clone());
        spec.run_as = self.run_as;
        let path = |sub: &str| base.join(sub).into_os_string();
        spec.env = vec![
            ("HOME".into(), base.clone().into_os_string()),
            (
                "RABBITMQ_NODENAME".into(),
                format!("{}@localhost", self.node_name).into(),
            ),
            ("RABBITMQ_NODE_IP_ADDRESS".into(), "127.0.0.1".into()),
            (
                "RABBITMQ_NODE_PORT".into(),
                self.amqp_port.to_string().into(),
            ),
            (
                "RABBITMQ_DIST_PORT".into(),
                self.dist_port.to_string().into(),
            ),
            ("ERL_EPMD_PORT".into(), self.epmd_port.to_string().into()),
            ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
            ("RABBITMQ_MNESIA_BASE".into(), path("mnesia")),
            ("RABBITMQ_LOG_BASE".into(), path("log")),
            ("RABBITMQ_FEATURE_FLAGS_FILE".into(), path("feature_flags")),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".into(),
                path("enabled_plugins"),
            ),
            ("RABBITMQ_CONFIG_FILE".into(), path("rabbitmq")),
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".into(),
                "-kernel inet_dist_use_interface {127,0,0,1}".into(),
            ),
        ];
        Ok(spec)
    }

    /// Starts `epmd`, then the node; waits (up to `timeout`) until the node
    /// accepts AMQP connections.
    pub fn start(self, timeout: Duration, cancel: &Cancel) -> Result<LocalRabbit, Error> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("cannot create", &self.dir, e))?;
        let epmd_spec = ProcessSpec::new("epmd", &self.epmd, self.dir.join("epmd.log")).args([
            "-port".to_owned(),
            self.epmd_port.to_string(),
            "-address".to_owned(),
            "127.0.0.1".to_owned(),
        ]);
        let mut epmd = Supervised::spawn(epmd_spec)?;
        // Listening before the node starts, or the node starts a daemon of
        // its own that would outlive us.
        let epmd_address = ([127, 0, 0, 1], self.epmd_port).into();
        epmd.wait_ready(&mut TcpProbe::new(epmd_address), timeout, cancel)?;
        let mut rabbit = LocalRabbit {
            config: self,
            epmd,
            node: None,
        };
        rabbit.resume(timeout, cancel)?;
        Ok(rabbit)
    }
}

/// A running RabbitMQ node and its `epmd` (both stopped and reaped when
/// dropped).
#[derive(Debug)]
pub struct LocalRabbit {
    config: RabbitConfig,
    epmd: Supervised,
    node: Option<Supervised>,
}

impl LocalRabbit {
    /// How it was started.
    pub fn config(&self) -> &RabbitConfig {
        &self.config
    }

    /// The node's process id (it leads its own process group, the Erlang
    /// VM's processes included), while it runs.
    pub fn node_pid(&self) -> Option<u32> {
        self.node.as_ref().map(Supervised::pid)
    }

    /// Whether the node runs.
    pub fn is_running(&mut self) -> bool {
        self.node.as_mut().is_some_and(Supervised::is_running)
    }

    /// Stops the node at once (SIGKILL of its process group); its data
    /// stays, `epmd` keeps running.
    pub fn kill_node(&mut self) -> Result<(), Error> {
        if let Some(mut node) = self.node.take() {
            node.kill()?;
        }
        Ok(())
    }

    /// Freezes the node (SIGSTOP of its process group): its connections
    /// stay open but it answers nothing until [`Self::thaw_node`] — a broker
    /// that stalls, without the seconds a restart of the node takes.
    pub fn freeze_node(&mut self) {
        if let Some(node) = self.node.as_mut() {
            node.signal(Signal::SIGSTOP);
        }
    }

    /// Lets a node frozen by [`Self::freeze_node`] run again (SIGCONT).
    pub fn thaw_node(&mut self) {
        if let Some(node) = self.node.as_mut() {
            node.signal(Signal::SIGCONT);
        }
    }

    /// Stops the node gracefully (SIGTERM, as an init system does).
    pub fn stop_node(&mut self) -> Result<(), Error> {
        if let Some(mut node) = self.node.take() {
            node.stop(NODE_GRACE)?;
        }
        Ok(())
    }

    /// Starts the node (again, on the same ports and data).
    pub fn resume(&mut self, timeout: Duration, cancel: &Cancel) -> Result<(), Error> {
        if self.node.is_some() {
            return Ok(());
        }
        let mut node = Supervised::spawn(self.config.node_spec()?)?;
        let address = ([127, 0, 0, 1], self.config.amqp_port).into();
        node.wait_ready(&mut TcpProbe::new(address), timeout, cancel)?;
        self.node = Some(node);
        Ok(())
    }
}

impl Drop for LocalRabbit {
    fn drop(&mut self) {
        let _ = self.kill_node();
        // Whatever epmd holds the port (ours, or one the node started).
        let _ = Command::new(&self.config.epmd)
            .args(["-port", &self.config.epmd_port.to_string(), "-kill"])
            .output();
        let _ = self.epmd.kill();
    }
}

fn chown_tree(path: &Path, user: RunAs) -> Result<(), Error> {
    chown(
        path,
        Some(Uid::from_raw(user.uid)),
        Some(Gid::from_raw(user.gid)),
    )
    .map_err(|e| Error::io("cannot chown", path, e.into()))?;
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| Error::io("cannot read", path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("cannot read", path, e))?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> RabbitConfig {
        RabbitConfig {
            server: "/usr/lib/rabbitmq/bin/rabbitmq-server".into(),
            epmd: "/usr/bin/epmd".into(),
            dir: dir.to_owned(),
            node_name: "mesh1".to_owned(),
            amqp_port: 5700,
            dist_port: 5701,
            epmd_port: 5702,
            tls: None,
            run_as: None,
        }
    }

    #[test]
    fn the_node_is_confined_to_its_folder_and_ports() {
        let dir = tempfile::tempdir().unwrap();
        let spec = config(dir.path()).node_spec().unwrap();
        let env: std::collections::HashMap<String, String> = spec
            .env
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert_eq!(env["RABBITMQ_NODENAME"], "mesh1@localhost");
        assert_eq!(env["RABBITMQ_NODE_PORT"], "5700");
        assert_eq!(env["RABBITMQ_DIST_PORT"], "5701");
        assert_eq!(env["ERL_EPMD_PORT"], "5702");
        for (name, value) in &env {
            if name.ends_with("_BASE") || name.ends_with("_FILE") || name == "HOME" {
                assert!(
                    value.starts_with(&dir.path().display().to_string()),
                    "{name}={value}"
                );
            }
        }
        let conf = std::fs::read_to_string(dir.path().join("node/rabbitmq.conf")).unwrap();
        assert!(conf.contains("listeners.tcp.1 = 127.0.0.1:5700"), "{conf}");
        assert!(!conf.contains("ssl"), "no TLS unless asked: {conf}");
    }
}
