//! A `consul agent -dev` that `mesh up` starts when no agent answers: the UI
//! on, everything bound to loopback, the HTTP port asked for and free ports
//! for the rest (so it never collides with another agent).

use std::{
    fs::File,
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

use super::ConsulApi;
use crate::process;

/// How long the agent has to elect itself leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent has to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A dev agent started by us (and so stopped by us).
#[derive(Debug)]
pub(crate) struct DevAgent {
    child: Child,
    log: PathBuf,
}

impl DevAgent {
    /// Starts `consul` (the binary at `program`) with its HTTP API on
    /// `127.0.0.1:<http_port>`, output appended to `log`. Returns at once:
    /// [`DevAgent::wait_leader`] waits for it to be usable.
    pub(crate) fn spawn(program: &Path, http_port: u16, log: &Path) -> anyhow::Result<Self> {
        let mut args = vec!["-http-port".to_owned(), http_port.to_string()];
        let flags = [
            "-dns-port",
            "-grpc-port",
            "-serf-lan-port",
            "-serf-wan-port",
            "-server-port",
        ];
        for (flag, port) in flags.into_iter().zip(free_ports(flags.len(), http_port)?) {
            args.extend([flag.to_owned(), port.to_string()]);
        }
        Self::spawn_with(program, &args, log)
    }

    /// Starts a dev agent whose ports, ACLs and TLS come from `config_file`
    /// (`mesh up --secure`).
    pub(crate) fn spawn_configured(
        program: &Path,
        config_file: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let args = ["-config-file".to_owned(), config_file.display().to_string()];
        Self::spawn_with(program, &args, log)
    }

    fn spawn_with(program: &Path, extra: &[String], log: &Path) -> anyhow::Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let mut command = Command::new(program);
        command.args([
            "agent",
            "-dev",
            "-ui",
            "-client",
            "127.0.0.1",
            "-bind",
            "127.0.0.1",
        ]);
        command.args(extra);
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            // Its own process group: a Ctrl-C in the terminal reaches `mesh up`
            // only, which stops the services first and the agent last.
            .process_group(0)
            // Should `mesh up` itself fail, the agent does not outlive it.
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    /// The agent's process id (while it runs).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the agent has a raft leader; fails (with the end of its
    /// log) if it exits or takes longer than 30 s.
    pub(crate) async fn wait_leader(&mut self, api: &ConsulApi) -> anyhow::Result<()> {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the Consul agent exited ({}) before electing a leader; the end of {}:\n{}",
                    process::describe(status),
                    self.log.display(),
                    process::log_tail(&self.log, 15)
                );
            }
            if api.leader().await.is_ok_and(|leader| !leader.is_empty()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the Consul agent elected no leader within {LEADER_TIMEOUT:?}; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, up to 10 s, then SIGKILL; reaps the agent. Whether it had
    /// to be killed (Consul exits 1 on SIGTERM: its status says little).
    pub(crate) async fn stop(mut self) -> std::io::Result<bool> {
        let (status, killed) = process::stop(&mut self.child, STOP_GRACE).await;
        status.map(|_| killed)
    }
}

/// `count` distinct loopback ports, free for both TCP and UDP now (Consul's
/// DNS and Serf use both), none equal to `except`.
pub(crate) fn free_ports(count: usize, except: u16) -> anyhow::Result<Vec<u16>> {
    // Holding the listeners until all are chosen keeps the ports distinct.
    let mut held = Vec::new();
    for _ in 0..count * 20 {
        if held.len() == count {
            break;
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if port != except {
            if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
                held.push((port, listener, udp));
            }
        }
    }
    if held.len() < count {
        bail!("found no {count} free loopback ports for the Consul agent");
    }
    Ok(held.into_iter().map(|(port, _, _)| port).collect())
}
