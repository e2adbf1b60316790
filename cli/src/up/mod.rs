//! `mesh up`: the whole mesh on this machine, supervised (ADR 0005).
//!
//! 1. Consul: the agent at `CONSUL_HTTP_ADDR` if it answers (used as it is),
//!    else one started here by the `localenv` engine (installing `consul` with
//!    `scripts/install-tools` if needed) — ACLs default-deny and HTTPS only,
//!    the mesh's policies and one token per service, unless
//!    `--insecure-consul` — and described in `<state>/env.json` for the
//!    operator's other commands;
//! 2. with `--mtls=required` (the default): the default intentions
//!    (default-deny; in an agent not started here only with
//!    `--apply-intentions`) and an `operator` certificate for grpcurl;
//! 3. the message broker of the events (`redis-server`, by the same engine,
//!    data in `<state>/broker`, a password unless `--insecure-consul`);
//!    orders (whose outbox relay publishes to it) and shipping (which
//!    consumes) get its URL and password file in their environment;
//! 4. every instance as its own `mesh serve <service>` process, restarted with
//!    backoff when it crashes, then the API gateway (`mesh serve gateway`,
//!    trusting the local token key `<state>/gateway/`, created 0600 here);
//! 5. wait until Consul reports all of them passing, seed demo data through
//!    the mesh client, print where everything is (grpcurl commands included);
//! 6. on SIGINT/SIGTERM/SIGHUP: SIGTERM every instance, wait for their drain
//!    (+5 s), SIGKILL what is left, stop the broker, stop the agent if we
//!    started it (and remove its description), exit 0. A second signal
//!    skips the wait.

mod backoff;
mod banner;
mod broker;
mod canary;
mod child_consul;
mod console;
mod consul;
mod front_door;
mod pids;
mod plan;
mod ready;
mod seed;
mod supervisor;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use discovery::connect::ConnectCa;
use localenv::{consul::LocalConsul, Description};
use mesh::{
    client::{ClientOptions, MeshClient},
    config::{duration, MtlsMode},
    connect::Identity,
};

use self::{
    console::say,
    pids::PidFile,
    plan::{InstanceCounts, PortMode},
    supervisor::{Settings, Supervisor},
};
use crate::{
    consul::ConsulApi,
    local::agent as local_agent,
    signals::{StopSignal, StopSignals},
};

/// `mesh up` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct UpArgs {
    /// Instances per service, e.g. `users=3,orders=1` (others: 2), or one
    /// count for all (`1`).
    #[arg(long, default_value = "2")]
    instances: InstanceCounts,

    /// The Consul agent; when nothing answers there (on loopback), one is
    /// started on that port: ACLs on with `default_policy = "deny"`, its API on
    /// HTTPS only (certificates from `consul tls`), the mesh's policies and one
    /// token per service, handed to each instance as a file (everything under
    /// `<state-dir>/consul` and `<state-dir>/secrets`). An agent that answers
    /// is used as it is; its TLS and token settings are passed to the
    /// instances in their environment.
    #[command(flatten)]
    consul: mesh::config::ConsulArgs,

    /// Start the local agent with ACLs off and plain HTTP. mTLS without ACLs
    /// is not a security boundary: anyone who reaches the agent can get a
    /// certificate for any identity, `operator` included.
    #[arg(long)]
    insecure_consul: bool,

    /// What `mesh up` does by default now (ACLs default-deny, HTTPS); kept so
    /// that `mesh up --secure` still works.
    #[arg(long, hide = true, conflicts_with = "insecure_consul")]
    secure: bool,

    /// Also set the mesh's default intentions in an agent `mesh up` did not
    /// start (one it starts always gets them; otherwise a cluster's
    /// intentions are its owner's).
    #[arg(long)]
    apply_intentions: bool,

    /// Folder for the databases (`data/`), logs (`logs/`) and the pid file.
    #[arg(long, default_value = ".mesh")]
    state_dir: PathBuf,

    /// Port of the first gRPC service's instance 1 (users); the other gRPC
    /// services' ports keep their distance from it (with `--ports fixed`).
    #[arg(long, default_value_t = mesh_cli::services::first_grpc_port())]
    base_port: u16,

    /// `fixed`: instance 1 of each service on its well-known port, others on
    /// free ports. `dynamic`: every instance on a free port (Consul knows
    /// them), so nothing collides with another mesh.
    #[arg(long, value_enum, default_value_t = PortMode::Fixed)]
    ports: PortMode,

    /// Do not create the demo user and stock.
    #[arg(long)]
    no_seed: bool,

    /// How long a stopping instance keeps serving after deregistering (`2s`;
    /// a bare number is milliseconds).
    #[arg(value_name = "DURATION", long = "drain", alias = "drain-ms", default_value = "2s",
          value_parser = duration::millis)]
    drain: Duration,

    /// How long to wait for every instance to pass in Consul (`90s`, `2m`; a
    /// bare number is seconds).
    #[arg(value_name = "DURATION", long = "ready-timeout", alias = "ready-timeout-secs", default_value = "90s",
          value_parser = duration::parser(duration::BareUnit::Seconds, Duration::ZERO))]
    ready_timeout: Duration,

    /// `required`: every instance serves Connect mTLS only, the default
    /// intentions (default-deny, the shop's call graph, `operator` everywhere)
    /// are set, and an `operator` certificate is written to `<state-dir>/certs/operator`
    /// for grpcurl. `off`: plaintext (local experiments only).
    #[arg(long, env = "MESH_MTLS", value_enum, default_value_t = MtlsMode::Required)]
    mtls: MtlsMode,

    #[command(flatten)]
    canary: canary::CanaryArgs,
}

/// What has been started and must be stopped, whatever happens.
#[derive(Debug, Default)]
struct Running {
    /// The agent we started (described in `<state>/env.json`).
    agent: Option<LocalConsul>,
    supervisor: Option<Supervisor>,
    /// The message broker we started.
    broker: Option<broker::Broker>,
    /// The agent the instances register with, and their service IDs.
    registrations: Option<(ConsulApi, Vec<String>)>,
}

/// Runs the mesh until a stop signal; exit 0 after a clean stop, 1 when it
/// could not come up (everything started is stopped in both cases).
pub(crate) async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut signals = StopSignals::install().context("cannot install signal handlers")?;
    let plan = plan::instances(
        mesh_cli::services::identities(),
        &args.instances,
        args.ports,
        args.base_port,
    )?;
    let plan = canary::extend(plan, &args.canary);
    let shown_state_dir = args.state_dir.clone();
    for folder in ["data", "logs"] {
        let path = args.state_dir.join(folder);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    let state_dir = args
        .state_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.state_dir.display()))?;
    let pids = Arc::new(PidFile::claim(&state_dir)?);

    let mut running = Running::default();
    let outcome = drive(
        &args,
        plan,
        &state_dir,
        &shown_state_dir,
        &pids,
        &mut signals,
        &mut running,
    )
    .await;
    if let Err(error) = &outcome {
        eprintln!("mesh up: {error:#}");
    }
    teardown(running, &state_dir, &pids, &mut signals).await;
    pids.delete();
    Ok(match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    })
}

/// Everything up to the stop signal. Whatever it started is in `running`.
async fn drive(
    args: &UpArgs,
    plan: Vec<plan::InstancePlan>,
    state_dir: &Path,
    shown_state_dir: &Path,
    pids: &Arc<PidFile>,
    signals: &mut StopSignals,
    running: &mut Running,
) -> anyhow::Result<()> {
    let started_at = Instant::now();

    // 1. Consul: the agent that answers, else one of ours.
    let found = consul::find_or_start(args, state_dir, shown_state_dir, pids, signals, running);
    let consul::Agent {
        api,
        child: child_consul,
        ours,
    } = match found.await? {
        consul::Outcome::Ready(agent) => *agent,
        consul::Outcome::Interrupted(signal) => return stopped_early(signal),
    };

    // 2. Zero trust: intentions first (no instance ever serves without them),
    //    and the operator's certificate for grpcurl.
    // `mesh up`'s own calls: to an agent of ours, HTTPS and the master token.
    let consul_config = api.config().clone();
    let operator = match args.mtls {
        MtlsMode::Required => {
            let ca = ConnectCa::new(&consul_config);
            if ours || args.apply_intentions {
                crate::intentions::apply(&ca).await?;
                say(format!(
                    "consul: intentions set: {}",
                    crate::intentions::describe().join(", ")
                ));
            }
            let files = crate::cert::write(
                &ca,
                mesh::connect::OPERATOR,
                &state_dir.join("certs").join(mesh::connect::OPERATOR),
            )
            .await?;
            say(format!(
                "certificate of {} for grpcurl in {}",
                files.service_uri,
                files.dir.display()
            ));
            Some(files)
        }
        MtlsMode::Off => {
            say("warning: --mtls=off: the mesh is plaintext, unauthenticated and unauthorized");
            None
        }
    };

    if args.canary.canary {
        say(canary::write_config(&consul_config).await?);
    }

    // 3. The broker.
    let started_broker = running
        .broker
        .insert(broker::start(state_dir, !args.insecure_consul).await?);
    pids.set("redis", started_broker.pid());
    let child_broker = started_broker.child.clone();
    let broker_port = started_broker.port();
    match api
        .register(&child_broker.registration(broker_port))
        .await
    {
        Ok(()) => say(format!(
            "broker: registered in Consul as {} (Meta.scheme redis)",
            events::CONSUL_SERVICE
        )),
        // Instances are given its URL anyway; only discovery by others is lost.
        Err(error) => say(format!(
            "warning: broker: cannot register it in Consul ({error}); instances get its URL directly"
        )),
    }
    say(format!(
        "broker: redis-server at {}{} (pid {}, append-only file in {}, log {})",
        child_broker.url,
        if child_broker.password_file.is_some() {
            format!(
                ", password in {}",
                shown_state_dir.join("secrets/broker.password").display()
            )
        } else {
            String::new()
        },
        started_broker.pid(),
        shown_state_dir.join("broker").display(),
        shown_state_dir.join("broker/redis.log").display()
    ));

    // 4. The instances.
    plan::check_ports_free(&plan)?;
    let settings = Settings {
        program: std::env::current_exe().context("cannot find this executable")?,
        data_dir: state_dir.join("data"),
        logs_dir: state_dir.join("logs"),
        consul: child_consul,
        drain: args.drain,
        mtls: args.mtls,
        broker: child_broker,
        gateway_keys: gateway::auth::dev::DevKeys::ensure(&crate::token::keys_dir(state_dir))
            .context("cannot create the local token key of the gateway")?,
    };
    say(format!(
        "starting {} instances ({}), logs in {}",
        plan.len(),
        args.instances,
        shown_state_dir.join("logs").display()
    ));
    let plan_for_banner = plan.clone();
    running.registrations = Some((
        api.clone(),
        plan.iter()
            .map(plan::InstancePlan::id)
            .chain([broker::REGISTRATION_ID.to_owned()])
            .collect(),
    ));
    running.supervisor = Some(Supervisor::start(settings.clone(), plan, Arc::clone(pids)));

    // 5. Ready, seeded, announced.
    let bring_up = async {
        let timeout = args.ready_timeout;
        let passing = match ready::wait_passing(&api, &plan_for_banner, timeout).await {
            Ok(passing) => passing,
            Err(not_ready) => {
                for id in &not_ready.missing {
                    let log = settings.logs_dir.join(format!("{id}.log"));
                    eprintln!(
                        "---- the end of {} ----\n{}",
                        log.display(),
                        localenv::log_tail(&log, 10)
                    );
                }
                return Err(anyhow::Error::from(not_ready));
            }
        };
        let demo = if args.no_seed {
            None
        } else {
            let identity = operator
                .as_ref()
                .map(|_| Identity::watch(&consul_config, mesh::connect::OPERATOR));
            let mesh = MeshClient::new(
                consul_config.clone(),
                ClientOptions {
                    identity,
                    ..ClientOptions::default()
                },
            );
            match seed::seed(&mesh).await {
                Ok(demo) => Some(demo),
                Err(error) => {
                    say(format!("warning: could not seed the demo data: {error:#}"));
                    None
                }
            }
        };
        let pid_snapshot = pids.snapshot();
        let banner = banner::Banner {
            consul_url: api.config().base_url(),
            local: running.agent.as_ref(),
            described_here: running.agent.is_some()
                && std::env::current_dir()
                    .ok()
                    .and_then(|here| Description::find(&here))
                    .is_some_and(|found| found == Description::path(state_dir)),
            plan: &plan_for_banner,
            passing: &passing,
            pids: &pid_snapshot,
            demo: demo.as_ref(),
            operator: operator.as_ref(),
            gateway_keys: &settings.gateway_keys,
            state_dir: shown_state_dir,
            logs_dir: &shown_state_dir.join("logs"),
            pid_file: &shown_state_dir.join("pids"),
            elapsed: started_at.elapsed(),
        };
        say(banner.render());
        if args.canary.canary {
            say(canary::banner(&plan_for_banner));
        }
        anyhow::Ok(())
    };
    tokio::select! {
        result = bring_up => result?,
        signal = signals.recv() => return stopped_early(signal),
    }

    // 6. Supervise until asked to stop.
    let signal = signals.recv().await;
    say(format!("\n{signal}: stopping"));
    Ok(())
}

fn stopped_early(signal: StopSignal) -> anyhow::Result<()> {
    say(format!("{signal} while starting: stopping"));
    Ok(())
}

/// Stops the instances (a further signal SIGKILLs them at once), then the
/// agent if we started it (its description first: it no longer runs).
async fn teardown(running: Running, state_dir: &Path, pids: &PidFile, signals: &mut StopSignals) {
    if let Some(supervisor) = running.supervisor {
        let kill_switch = supervisor.kill_switch();
        let stopping = supervisor.stop();
        tokio::pin!(stopping);
        let stopped = loop {
            tokio::select! {
                stopped = &mut stopping => break stopped,
                signal = signals.recv() => {
                    say(format!("{signal} again: killing every instance now"));
                    kill_switch.kill();
                }
            }
        };
        let killed: Vec<&str> = stopped
            .iter()
            .filter(|s| s.killed)
            .map(|s| s.id.as_str())
            .collect();
        let unclean: Vec<String> = stopped
            .iter()
            .filter(|s| !s.killed)
            .filter_map(|s| {
                let status = s.status?;
                (!status.success()).then(|| format!("{} ({})", s.id, localenv::describe(status)))
            })
            .collect();
        say(format!(
            "stopped {} instance(s){}{}",
            stopped.len(),
            if killed.is_empty() {
                String::new()
            } else {
                format!(
                    "; SIGKILLed (grace period over, or a second signal): {}",
                    killed.join(", ")
                )
            },
            if unclean.is_empty() {
                String::new()
            } else {
                format!("; exited with an error: {}", unclean.join(", "))
            }
        ));
    }
    if let Some(broker) = running.broker {
        match broker.stop().await {
            Ok(stopped) if !stopped.killed => say("broker: stopped"),
            Ok(_) => say("broker: SIGKILLed (it did not stop within 10 s of SIGTERM)"),
            Err(error) => eprintln!("broker: could not be stopped cleanly: {error:#}"),
        }
        pids.remove("redis");
    }
    if let (None, Some((api, ids))) = (&running.agent, &running.registrations) {
        remove_leftover_registrations(api, ids).await;
    }
    if let Some(agent) = running.agent {
        Description::remove(state_dir);
        match local_agent::stop(agent).await {
            Ok(stopped) if !stopped.killed => say("consul: stopped"),
            Ok(_) => say("consul: SIGKILLed (it did not stop within 10 s of SIGTERM)"),
            Err(error) => eprintln!("consul: could not be stopped cleanly: {error:#}"),
        }
        pids.remove("consul");
    }
}

/// An instance stopped before it could deregister (killed after the grace
/// period, or stopped while starting, before its signal handlers were
/// installed) leaves its registration behind; in an agent we did not start
/// (and so do not stop), remove those of our instances.
async fn remove_leftover_registrations(api: &ConsulApi, ids: &[String]) {
    let registered = match api.agent_service_ids().await {
        Ok(registered) => registered,
        Err(error) => {
            eprintln!("consul: cannot check for leftover registrations: {error}");
            return;
        }
    };
    let mut removed = Vec::new();
    for id in ids.iter().filter(|id| registered.contains(id)) {
        match api.deregister(id).await {
            Ok(()) => removed.push(id.as_str()),
            Err(error) => eprintln!("consul: cannot deregister {id}: {error}"),
        }
    }
    if !removed.is_empty() {
        say(format!(
            "consul: removed registrations left by stopped instances: {}",
            removed.join(", ")
        ));
    }
}
