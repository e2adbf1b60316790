//! Consul for `mesh up`: the agent at the configured address if one answers
//! (used as it is), else one of our own on that loopback port, secure unless
//! `--insecure-consul`, described in `<state>/env.json`.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use localenv::consul::{LocalConsul, Posture};

use super::{child_consul::ChildConsul, console::say, pids::PidFile, Running, UpArgs};
use crate::{
    consul::{ApiError, ConsulApi},
    local::agent::{self as local_agent, AgentPlan, Startup, PLAIN_WARNING},
    signals::{StopSignal, StopSignals},
};

/// How long an answering agent may take to have a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether an agent answers at the configured address.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// It answers and has a leader: use it.
    Running,
    /// Nothing listens there (loopback only): start our own.
    Absent,
}

/// Asks `GET /v1/status/leader`. An agent without a leader yet gets 30 s.
pub(crate) async fn probe(api: &ConsulApi) -> anyhow::Result<Found> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        match api.leader().await {
            Ok(leader) if !leader.is_empty() => return Ok(Found::Running),
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(_) => bail!(
                "the Consul agent at {} has no leader after {LEADER_TIMEOUT:?}",
                api.address()
            ),
            Err(ApiError::Unreachable { .. }) if api.is_loopback() => return Ok(Found::Absent),
            Err(error @ ApiError::Unreachable { .. }) => bail!(
                "{error}. `mesh up` starts an agent of its own only on this machine's loopback: \
                 start that agent, or point CONSUL_HTTP_ADDR (--consul-addr) at 127.0.0.1:<port>"
            ),
            Err(error) => return Err(error.into()),
        }
    }
}

/// The agent `mesh up` uses.
#[derive(Debug)]
pub(crate) struct Agent {
    /// `mesh up`'s own client: what it was given, or the management token of
    /// an agent of ours.
    pub(crate) api: ConsulApi,
    /// What the instances are told.
    pub(crate) child: ChildConsul,
    /// Whether `mesh up` started it (and so owns its intentions).
    pub(crate) ours: bool,
}

/// How finding Consul ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// An agent to use (boxed: large, and returned once).
    Ready(Box<Agent>),
    /// A stop signal came first (anything started is stopped).
    Interrupted(StopSignal),
}

/// The agent at the configured address if it answers, else one started here
/// (recorded in `running` and the pid file, described in `<state>/env.json`).
pub(crate) async fn find_or_start(
    args: &UpArgs,
    state_dir: &Path,
    shown_state_dir: &Path,
    pids: &Arc<PidFile>,
    signals: &mut StopSignals,
    running: &mut Running,
) -> anyhow::Result<Outcome> {
    let given = args.consul.config()?;
    let api = ConsulApi::new(&given);
    let found = tokio::select! {
        found = probe(&api) => found?,
        signal = signals.recv() => return Ok(Outcome::Interrupted(signal)),
    };
    if found == Found::Running {
        say(format!(
            "consul: using the agent at {} (not started here: left running on exit; its \
             intentions are {})",
            api.address(),
            if args.apply_intentions {
                "set to the mesh's (--apply-intentions)"
            } else {
                "left as they are (--apply-intentions sets the mesh's)"
            }
        ));
        if args.insecure_consul {
            say(
                "note: --insecure-consul is for an agent mesh up starts; this one is used as it is",
            );
        }
        // The instances get what `mesh up` was given.
        let child = ChildConsul {
            settings: discovery::ConsulSettings {
                address: Some(given.base_url().to_owned()),
                ..given.settings().clone()
            },
            per_service_tokens: None,
        };
        return Ok(Outcome::Ready(Box::new(Agent {
            api,
            child,
            ours: false,
        })));
    }
    let posture = if args.insecure_consul {
        say(PLAIN_WARNING);
        Posture::Plain
    } else {
        Posture::Secure
    };
    if posture == Posture::Plain && given.is_https() {
        bail!("--insecure-consul starts an agent speaking plain HTTP: give an http:// address");
    }
    let log = state_dir.join("logs/consul.log");
    let plan = AgentPlan {
        posture,
        state_dir: state_dir.to_owned(),
        port: Some(api.port()),
        log,
        node_name: None,
    };
    let announce = |agent: &LocalConsul| {
        pids.set("consul", agent.pid());
        say(format!(
            "consul: no agent answered at {}; started a dev agent there with {} at {} (pid {}, log {})",
            api.address(),
            match posture {
                Posture::Secure => "ACLs default-deny and HTTPS only",
                Posture::Plain => "ACLs off and plain HTTP",
            },
            agent.url(),
            agent.pid(),
            shown_state_dir.join("logs/consul.log").display()
        ));
    };
    let started = match local_agent::start(&plan, announce, signals).await {
        Ok(Startup::Ready(started)) => *started,
        Ok(Startup::Interrupted(signal)) => {
            pids.remove("consul");
            return Ok(Outcome::Interrupted(signal));
        }
        Err(error) => {
            pids.remove("consul");
            return Err(error);
        }
    };
    let local_agent::Started { agent, api, issued } = started;
    // Each instance gets its own token file and trusts the agent's CA.
    let child = ChildConsul {
        settings: discovery::ConsulSettings {
            address: Some(agent.url()),
            ca_file: agent.ca_file().map(Path::to_owned),
            ..discovery::ConsulSettings::default()
        },
        per_service_tokens: agent.secrets_dir(),
    };
    let agent = running.agent.insert(agent);
    if !issued.is_empty() {
        say(format!(
            "consul: ACL policies and tokens ready ({}), token files in {}",
            issued
                .iter()
                .map(|token| token.name)
                .collect::<Vec<_>>()
                .join(", "),
            shown_state_dir.join("secrets").display()
        ));
    }
    let described = local_agent::describe(agent, state_dir)?;
    say(format!(
        "consul: described in {} (mesh status, mesh cert… in this folder use it)",
        described.display()
    ));
    Ok(Outcome::Ready(Box::new(Agent {
        api,
        child,
        ours: true,
    })))
}
