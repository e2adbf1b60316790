//! A local Consul agent started by this process (`mesh up` when none
//! answers, `mesh env`), on the engine's blocking API driven from async code:
//! a stop signal while it starts ends the wait and stops it; once ready, it
//! is described in `<state>/env.json` for the operator's other commands.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use localenv::{
    acl::Issued,
    consul::{ConsulOptions, LocalConsul, Posture},
    Cancel, Description, Stopped,
};

use crate::{
    consul::{BlockingCalls, ConsulApi},
    signals::{StopSignal, StopSignals},
};

/// How long the agent may take to elect itself leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the plain posture gives up, said whenever it is chosen.
pub(crate) const PLAIN_WARNING: &str =
    "warning: --insecure-consul: the local Consul agent runs with ACLs off and plain HTTP. \
Anyone who can reach it can read and change the catalog and the intentions, and get a Connect \
certificate for any identity (`operator` may call every service, payments.Refund included): mTLS \
without ACLs is not a security boundary. Leaf private keys and tokens cross its port in clear.";

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct AgentPlan {
    /// Secure (the default) or plain.
    pub(crate) posture: Posture,
    /// The state folder (`consul/`, `secrets/`, `env.json`).
    pub(crate) state_dir: PathBuf,
    /// The API port (a free one when `None`).
    pub(crate) port: Option<u16>,
    /// Its log file.
    pub(crate) log: PathBuf,
    /// Its node name (default: the host's name).
    pub(crate) node_name: Option<String>,
}

/// A ready agent of ours.
#[derive(Debug)]
pub(crate) struct Started {
    /// The agent (stop it with [`stop`]).
    pub(crate) agent: LocalConsul,
    /// Our client for it, with the management token in the secure posture.
    pub(crate) api: ConsulApi,
    /// The tokens the ACL bootstrap issued (secure posture).
    pub(crate) issued: Vec<Issued>,
}

/// How starting ended.
#[derive(Debug)]
pub(crate) enum Startup {
    /// Ready to use (boxed: large, and returned once).
    Ready(Box<Started>),
    /// A stop signal came first; the agent has been stopped.
    Interrupted(StopSignal),
}

/// Starts an agent and waits for it (and, secure, for its ACL bootstrap).
/// `spawned` hears its pid as soon as it exists. On a failure or a signal the
/// agent is stopped before this returns.
pub(crate) async fn start(
    plan: &AgentPlan,
    spawned: impl FnOnce(&LocalConsul),
    signals: &mut StopSignals,
) -> anyhow::Result<Startup> {
    refuse_a_running_environment(&plan.state_dir)?;
    let program = crate::tools::consul().await?;
    let mut options = ConsulOptions::new(program, plan.posture, &plan.state_dir);
    options.api_port = plan.port;
    options.log = Some(plan.log.clone());
    options.node_name.clone_from(&plan.node_name);
    options.ready_timeout = READY_TIMEOUT;
    let agent = tokio::task::spawn_blocking(move || LocalConsul::spawn(options))
        .await
        .context("the agent's start-up task failed")??;
    spawned(&agent);
    let endpoint = agent.endpoint();
    let config = discovery::ConsulSettings {
        address: Some(endpoint.url.clone()),
        ca_file: endpoint.ca_file.clone(),
        token_file: endpoint.token_file.clone(),
        ..discovery::ConsulSettings::default()
    }
    .build();
    let api = match config {
        Ok(config) => ConsulApi::new(&config),
        Err(error) => {
            stop(agent).await?;
            return Err(error).context("cannot talk to the agent just started");
        }
    };
    let cancel = Cancel::default();
    let calls = BlockingCalls::new(api.clone(), tokio::runtime::Handle::current());
    let waiting = cancel.clone();
    let mut task = tokio::task::spawn_blocking(move || {
        let mut agent = agent;
        let ready = agent.wait_ready(&calls, &waiting);
        (agent, ready)
    });
    let (agent, ready) = tokio::select! {
        joined = &mut task => joined.context("the agent's start-up task failed")?,
        signal = signals.recv() => {
            cancel.cancel();
            let (agent, _) = task.await.context("the agent's start-up task failed")?;
            stop(agent).await?;
            return Ok(Startup::Interrupted(signal));
        }
    };
    match ready {
        Ok(issued) => Ok(Startup::Ready(Box::new(Started { agent, api, issued }))),
        Err(error) => {
            stop(agent).await?;
            Err(error.into())
        }
    }
}

/// SIGTERM, up to 10 s, SIGKILL; reaped.
pub(crate) async fn stop(mut agent: LocalConsul) -> anyhow::Result<Stopped> {
    tokio::task::spawn_blocking(move || agent.stop())
        .await
        .context("the agent's stop task failed")?
        .map_err(Into::into)
}

/// Writes `<state>/env.json` for the operator's other commands.
pub(crate) fn describe(agent: &LocalConsul, state_dir: &Path) -> anyhow::Result<PathBuf> {
    Description {
        consul: agent.description(),
    }
    .write(state_dir)
    .map_err(Into::into)
}

/// Fails when `<state>/env.json` describes an agent that still runs: one
/// local environment per state folder.
fn refuse_a_running_environment(state_dir: &Path) -> anyhow::Result<()> {
    let path = Description::path(state_dir);
    if !path.is_file() {
        return Ok(());
    }
    // Alive and still a Consul agent (a recycled pid is someone else's).
    let running = Description::read(&path)
        .ok()
        .and_then(|description| description.consul.pid)
        .filter(|pid| {
            crate::process::is_alive(*pid) && crate::process::runs_with_argument(*pid, "agent")
        });
    if let Some(pid) = running {
        anyhow::bail!(
            "{} describes a local environment that still runs (Consul pid {pid}): stop it first, \
             or use another --state-dir",
            path.display()
        );
    }
    Ok(())
}
