//! One task per instance: start `mesh serve <service> …` as a child process,
//! restart it with backoff when it exits without being asked to, and stop
//! it on request — SIGTERM, wait for its drain (+5 s), SIGKILL what is
//! left — always reaping it.

use std::{
    fs::File,
    io::Write as _,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    process::{Child, Command},
    sync::watch,
    task::JoinHandle,
};

use super::{backoff::Backoff, console::say, pids::PidFile, plan::InstancePlan};
use crate::process;

/// What every instance is started with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// This executable (it runs `serve <service>`).
    pub(crate) program: PathBuf,
    /// `--data-dir` of every instance that owns a database (one SQLite file
    /// per service).
    pub(crate) data_dir: PathBuf,
    /// Where `<service>-<n>.log` go.
    pub(crate) logs_dir: PathBuf,
    /// Consul's address, TLS and token, passed in the environment.
    pub(crate) consul: super::child_consul::ChildConsul,
    /// `--drain` of every instance.
    pub(crate) drain: Duration,
    /// `--mtls` of every instance.
    pub(crate) mtls: mesh::config::MtlsMode,
    /// The broker, for the services that publish or consume events.
    pub(crate) broker: super::broker::ChildBroker,
    /// The local token key the gateway trusts (`mesh token` signs with it).
    pub(crate) gateway_keys: gateway::auth::dev::DevKeys,
}

impl Settings {
    /// How long a stopping instance gets before SIGKILL: its drain + 5 s.
    pub(crate) fn grace(&self) -> Duration {
        self.drain + Duration::from_secs(5)
    }

    /// The log file of `instance`.
    pub(crate) fn log_path(&self, instance: &InstancePlan) -> PathBuf {
        self.logs_dir.join(format!("{}.log", instance.id()))
    }
}

/// What the supervisor is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Keep every instance running.
    Run,
    /// SIGTERM, wait up to the grace period, then SIGKILL.
    Stop,
    /// SIGKILL now (a second Ctrl-C).
    Kill,
}

/// How one instance ended when stopped.
#[derive(Debug)]
pub(crate) struct Stopped {
    /// `<service>-<n>`.
    pub(crate) id: String,
    /// Its last exit (`None` if it was not running).
    pub(crate) status: Option<ExitStatus>,
    /// Whether it had to be SIGKILLed.
    pub(crate) killed: bool,
}

/// The running instances.
#[derive(Debug)]
pub(crate) struct Supervisor {
    order: watch::Sender<Order>,
    tasks: Vec<JoinHandle<Stopped>>,
}

/// Asks the supervisor to kill at once (cloneable, usable while it stops).
#[derive(Debug, Clone)]
pub(crate) struct KillSwitch(watch::Sender<Order>);

impl KillSwitch {
    /// SIGKILL every instance instead of waiting for their drain.
    pub(crate) fn kill(&self) {
        self.0.send_replace(Order::Kill);
    }
}

impl Supervisor {
    /// Starts every instance of `plan`, each in its own task.
    pub(crate) fn start(settings: Settings, plan: Vec<InstancePlan>, pids: Arc<PidFile>) -> Self {
        let settings = Arc::new(settings);
        let (order, _) = watch::channel(Order::Run);
        let tasks = plan
            .into_iter()
            .map(|instance| {
                tokio::spawn(supervise(
                    instance,
                    Arc::clone(&settings),
                    Arc::clone(&pids),
                    order.subscribe(),
                ))
            })
            .collect();
        Self { order, tasks }
    }

    /// A handle that turns a graceful stop into SIGKILL.
    pub(crate) fn kill_switch(&self) -> KillSwitch {
        KillSwitch(self.order.clone())
    }

    /// Stops every instance (in parallel) and waits until all are reaped.
    pub(crate) async fn stop(self) -> Vec<Stopped> {
        self.order.send_if_modified(|order| {
            let changed = *order == Order::Run;
            if changed {
                *order = Order::Stop;
            }
            changed
        });
        let mut stopped = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            match task.await {
                Ok(result) => stopped.push(result),
                // A panicked task dropped its child: kill_on_drop killed it.
                Err(error) => eprintln!("warning: an instance's supervisor failed: {error}"),
            }
        }
        stopped
    }
}

/// Resolves when the order is no longer [`Order::Run`] (or the supervisor is gone).
async fn stop_requested(order: &mut watch::Receiver<Order>) {
    let _ = order.wait_for(|order| *order != Order::Run).await;
}

/// Keeps one instance running until told to stop.
async fn supervise(
    instance: InstancePlan,
    settings: Arc<Settings>,
    pids: Arc<PidFile>,
    mut order: watch::Receiver<Order>,
) -> Stopped {
    let id = instance.id();
    let mut backoff = Backoff::default();
    let mut last_exit: Option<String> = None;
    loop {
        if *order.borrow() != Order::Run {
            return Stopped {
                id,
                status: None,
                killed: false,
            };
        }
        let started = Instant::now();
        let delay = match spawn(&instance, &settings) {
            Ok(mut child) => {
                let pid = child.id().unwrap_or_default();
                pids.set(&id, pid);
                if let Some(how) = last_exit.take() {
                    say(format!(
                        "restarted {id} (pid {pid}) after it exited with {how}"
                    ));
                }
                let Some(exit) = wait_or_stop(&mut child, &mut order).await else {
                    let (status, killed) = stop(&mut child, &settings, &mut order).await;
                    pids.remove(&id);
                    return Stopped { id, status, killed };
                };
                pids.remove(&id);
                let how = match exit {
                    Ok(status) => localenv::describe(status),
                    Err(error) => format!("an unknown status ({error})"),
                };
                let delay = backoff.after_exit(started.elapsed());
                say(format!(
                    "{id} exited with {how} after {:.1} s; restarting in {} s (log: {})",
                    started.elapsed().as_secs_f64(),
                    delay.as_secs(),
                    settings.log_path(&instance).display()
                ));
                last_exit = Some(how);
                delay
            }
            Err(error) => {
                let delay = backoff.after_exit(Duration::ZERO);
                say(format!(
                    "cannot start {id}: {error:#}; retrying in {} s",
                    delay.as_secs()
                ));
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop_requested(&mut order) => {}
        }
    }
}

/// Waits for the child to exit on its own (`Some`) or for a stop order (`None`).
async fn wait_or_stop(
    child: &mut Child,
    order: &mut watch::Receiver<Order>,
) -> Option<std::io::Result<ExitStatus>> {
    tokio::select! {
        status = child.wait() => Some(status),
        () = stop_requested(order) => None,
    }
}

/// SIGTERM (or SIGKILL on [`Order::Kill`]), wait up to the grace period,
/// SIGKILL, reap.
async fn stop(
    child: &mut Child,
    settings: &Settings,
    order: &mut watch::Receiver<Order>,
) -> (Option<ExitStatus>, bool) {
    if *order.borrow() == Order::Kill {
        return (process::kill_and_reap(child).await.ok(), true);
    }
    process::signal(child, nix::sys::signal::Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + settings.grace();
    tokio::select! {
        status = child.wait() => return (status.ok(), false),
        () = tokio::time::sleep_until(deadline) => {}
        _ = order.wait_for(|order| *order == Order::Kill) => {}
    }
    (process::kill_and_reap(child).await.ok(), true)
}

/// Starts `mesh serve <service> …` for `instance`, output appended to its log.
fn spawn(instance: &InstancePlan, settings: &Settings) -> anyhow::Result<Child> {
    let log_path = settings.log_path(instance);
    let mut log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let _ = writeln!(
        log,
        "---- mesh up: starting {} on 127.0.0.1:{} ----",
        instance.id(),
        instance.port
    );
    let mut command = Command::new(&settings.program);
    command
        .arg("serve")
        .arg(instance.service.name)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", instance.port));
    if instance.service.owns_database() {
        command.arg("--data-dir").arg(&settings.data_dir);
    }
    command
        .arg("--instance-id")
        .arg(instance.instance_id())
        .arg("--metrics-listen")
        .arg("127.0.0.1:0")
        .arg("--drain")
        .arg(format!("{}ms", settings.drain.as_millis()))
        .arg("--mtls")
        .arg(settings.mtls.as_str());
    if let Some(version) = instance.version {
        command.arg("--version-meta").arg(version);
    }
    if instance.service.name == gateway::IDENTITY.name {
        command
            .arg("--jwt-keys")
            .arg(&settings.gateway_keys.jwks)
            .arg("--jwt-issuer")
            .arg(gateway::auth::dev::DEV_ISSUER)
            .arg("--jwt-audience")
            .arg(gateway::auth::dev::DEV_AUDIENCE);
        // The gateway's own settings from the user's environment do not apply.
        for variable in [
            "MESH_TLS_CERT",
            "MESH_TLS_KEY",
            "MESH_CORS_ORIGINS",
            "MESH_JWT_KEYS",
        ] {
            command.env_remove(variable);
        }
    }
    // The user's environment must not turn the local mesh into something
    // else: one database for all four, or no Consul.
    // A fixed --health-listen would make every instance collide: each takes a free port.
    for variable in ["DATABASE_URL", "MESH_NO_CONSUL", "MESH_HEALTH_LISTEN"] {
        command.env_remove(variable);
    }
    settings.consul.apply(&mut command, instance.service.name);
    settings.broker.apply(&mut command);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Own process group: Ctrl-C reaches `mesh up` alone, which stops the
        // instances in order (and then Consul).
        .process_group(0)
        // Should `mesh up` fail or panic, no instance outlives it.
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("cannot run {}", settings.program.display()))
}
