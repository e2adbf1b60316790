//! `mesh env`: the local environment alone — a Consul agent (secure unless
//! `--insecure-consul`) on loopback, described in `<state>/env.json` — until
//! a stop signal. Once it is ready it prints, on stdout, the variables to use
//! it (`export NAME='value'`, shell-quoted) and then `# ready`, so a script
//! reads lines up to that marker (`scripts/check-prometheus`, `scripts/bench`,
//! `scripts/screenshots/run` do). Then it stops the agent and removes the
//! description.

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use localenv::{consul::Posture, Description};

use super::agent::{self, AgentPlan, Startup, PLAIN_WARNING};
use crate::signals::StopSignals;

/// The line after the variables.
pub(crate) const READY_MARKER: &str = "# ready";

/// `mesh env` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct EnvArgs {
    /// Folder of the agent's files and of `env.json`: with the default,
    /// `.mesh`, the operator's commands run in this folder find the agent.
    #[arg(long, default_value = localenv::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,

    /// The agent's API port on 127.0.0.1 (default: a free one).
    #[arg(long)]
    consul_port: Option<u16>,

    /// ACLs off and plain HTTP instead of ACLs default-deny and HTTPS (what
    /// it gives up is printed).
    #[arg(long)]
    insecure_consul: bool,

    /// The agent's node name (default: the host's name).
    #[arg(long)]
    node_name: Option<String>,
}

/// Runs the environment until SIGINT, SIGTERM or SIGHUP.
pub(crate) async fn run(args: EnvArgs) -> anyhow::Result<ExitCode> {
    let mut signals = StopSignals::install().context("cannot install signal handlers")?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    let state_dir = args
        .state_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.state_dir.display()))?;
    let posture = if args.insecure_consul {
        eprintln!("{PLAIN_WARNING}");
        Posture::Plain
    } else {
        Posture::Secure
    };
    let plan = AgentPlan {
        posture,
        log: state_dir.join("consul/consul.log"),
        state_dir: state_dir.clone(),
        port: args.consul_port,
        node_name: args.node_name,
    };
    let started = match agent::start(&plan, |_| {}, &mut signals).await? {
        Startup::Ready(started) => started,
        Startup::Interrupted(signal) => {
            eprintln!("mesh env: {signal} while starting: stopped");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let started = *started;
    let description = agent::describe(&started.agent, &state_dir);
    let printed = description.and_then(|_| {
        let mut lines = exports(&started.agent);
        lines.push(READY_MARKER.to_owned());
        let mut stdout = std::io::stdout().lock();
        for line in lines {
            writeln!(stdout, "{line}").context("cannot write to stdout")?;
        }
        stdout.flush().context("cannot write to stdout")
    });
    if printed.is_ok() {
        eprintln!(
            "mesh env: Consul {} (pid {}, log {}); Ctrl-C stops it",
            started.agent.url(),
            started.agent.pid(),
            started.agent.log_path().display()
        );
        let signal = signals.recv().await;
        eprintln!("mesh env: {signal}: stopping");
    }
    Description::remove(&state_dir);
    agent::stop(started.agent).await?;
    printed.map(|()| ExitCode::SUCCESS)
}

/// `export NAME='value'` lines: the agent's address, its CA and the
/// management token's file (Consul's own variables).
fn exports(agent: &localenv::consul::LocalConsul) -> Vec<String> {
    let endpoint = agent.endpoint();
    let mut variables = vec![(discovery::env::HTTP_ADDR, endpoint.url)];
    if let Some(ca) = endpoint.ca_file {
        variables.push((discovery::env::CACERT, ca.display().to_string()));
    }
    if let Some(token) = endpoint.token_file {
        variables.push((discovery::env::HTTP_TOKEN_FILE, token.display().to_string()));
    }
    variables
        .into_iter()
        .map(|(name, value)| format!("export {name}={}", shell_quote(&value)))
        .collect()
}

/// `'value'`, with `'` written as `'\''`.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_for_a_shell() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
