//! Self-registration: register until it works, then make sure the agent keeps
//! knowing the service, and deregister on shutdown (steps 3–5 of the
//! service lifecycle in docs/architecture.md).

use std::time::Duration;

use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tracing::Instrument;

use crate::{
    agent::Agent,
    backoff::Backoff,
    config::ConsulConfig,
    error::{ConfigError, ConsulError},
    registration::ServiceRegistration,
};

/// How long one register or lookup call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole of [`RegistrarHandle::deregister`].
const DEREGISTER_BUDGET: Duration = Duration::from_secs(2);
/// Part of that budget spent waiting for an in-flight call before aborting it.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Tuning of the registration loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarOptions {
    /// How often to check that the agent still knows the service (default 2 s).
    pub anti_entropy_interval: Duration,
    /// First retry delay after a failed registration (default 100 ms).
    pub min_backoff: Duration,
    /// Longest retry delay (default 5 s).
    pub max_backoff: Duration,
}

impl Default for RegistrarOptions {
    fn default() -> Self {
        Self {
            anti_entropy_interval: Duration::from_secs(2),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What the registrar knows, published on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationState {
    /// The last register call or lookup confirmed that the agent knows the service.
    pub registered: bool,
    /// Successful register calls: 1 normally, +1 after each time the agent forgot us.
    pub registrations: u64,
    /// Failed register calls and lookups.
    pub failures: u64,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// The loop has ended: deregistered, or the registration was invalid.
    pub stopped: bool,
}

/// Starts self-registration tasks.
#[derive(Debug)]
pub struct Registrar;

impl Registrar {
    /// Spawns a tokio task that registers through the agent API (`PUT
    /// /v1/agent/service/register`) with capped exponential backoff and jitter
    /// until it succeeds — serving never waits for Consul — then every
    /// `anti_entropy_interval` checks `GET /v1/agent/service/<id>` and registers
    /// again only when the agent no longer knows the service (a restarted dev
    /// agent forgets it). It never re-registers periodically: that would bump
    /// the index and wake every watcher.
    ///
    /// An invalid registration (see [`ServiceRegistration::validate`]) is never
    /// sent: the handle reports it in [`RegistrationState::last_error`] and
    /// stops. Use [`Registrar::try_spawn`] to get it as an error. Must be called
    /// inside a tokio runtime.
    pub fn spawn(
        config: ConsulConfig,
        registration: ServiceRegistration,
        options: RegistrarOptions,
    ) -> RegistrarHandle {
        let state = watch::Sender::new(RegistrationState::default());
        let (stop, stopped) = watch::channel(false);
        if let Err(error) = registration.validate() {
            tracing::error!(%error, "not registering in Consul");
            state.send_modify(|state| {
                state.last_error = Some(error.to_string());
                state.stopped = true;
            });
            return RegistrarHandle {
                config,
                id: registration.id,
                state,
                stop,
                task: None,
                valid: false,
            };
        }
        let id = registration.id.clone();
        let span = tracing::info_span!("consul_registrar", id = %id);
        let task = tokio::spawn(
            {
                let config = config.clone();
                let state = state.clone();
                async move {
                    run(config, registration, options, &state, stopped).await;
                    state.send_modify(|state| state.stopped = true);
                }
            }
            .instrument(span),
        );
        RegistrarHandle {
            config,
            id,
            state,
            stop,
            task: Some(task),
            valid: true,
        }
    }

    /// [`Registrar::spawn`], after [`ServiceRegistration::validate`].
    pub fn try_spawn(
        config: ConsulConfig,
        registration: ServiceRegistration,
        options: RegistrarOptions,
    ) -> Result<RegistrarHandle, ConfigError> {
        registration.validate()?;
        Ok(Self::spawn(config, registration, options))
    }
}

/// The running registration. Dropping it aborts the task without
/// deregistering (like SIGKILL: Consul's critical check and
/// `deregister_critical_after` take care of the instance).
#[derive(Debug)]
pub struct RegistrarHandle {
    config: ConsulConfig,
    id: String,
    state: watch::Sender<RegistrationState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    valid: bool,
}

impl RegistrarHandle {
    /// The service ID being registered.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the agent is known to have the registration.
    pub fn is_registered(&self) -> bool {
        self.state.borrow().registered
    }

    /// How many register calls succeeded (1 normally, +1 after each agent restart).
    pub fn registrations(&self) -> u64 {
        self.state.borrow().registrations
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// Follows the state, including the last error text.
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.state.subscribe()
    }

    /// Stops the loop, then `PUT /v1/agent/service/deregister/<id>`, all within
    /// about 2 s. Ok also if the service was never registered (or was invalid).
    pub async fn deregister(mut self) -> Result<(), ConsulError> {
        let deadline = Instant::now() + DEREGISTER_BUDGET;
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take() {
            // Let an in-flight register call finish rather than race it.
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        self.state.send_modify(|state| state.stopped = true);
        if !self.valid {
            return Ok(());
        }
        let ever_registered = self.state.borrow().registrations > 0;
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        // A register call that timed out on our side may still have reached the
        // agent, so deregister even when no registration was confirmed.
        let result = match Agent::new(&self.config) {
            Ok(agent) => agent.deregister(&self.id, remaining).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => {
                self.state.send_modify(|state| state.registered = false);
                tracing::info!(id = %self.id, "deregistered from Consul");
                Ok(())
            }
            Err(error) if !ever_registered => {
                tracing::debug!(id = %self.id, %error, "deregister of a never registered service failed");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(id = %self.id, %error, "deregistration failed");
                Err(error)
            }
        }
    }
}

impl Drop for RegistrarHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Sleeps `delay` unless asked to stop; returns whether to go on.
async fn pause(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = stop.changed() => false,
        () = tokio::time::sleep(delay) => !*stop.borrow(),
    }
}

async fn run(
    config: ConsulConfig,
    registration: ServiceRegistration,
    options: RegistrarOptions,
    state: &watch::Sender<RegistrationState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(options.min_backoff, options.max_backoff);
    let fail = |error: &ConsulError| {
        state.send_modify(|state| {
            state.registered = false;
            state.failures += 1;
            state.last_error = Some(error.to_string());
        });
    };
    let agent = loop {
        match Agent::new(&config) {
            Ok(agent) => break agent,
            Err(error) => {
                fail(&error);
                if !pause(&mut stop, backoff.next_delay()).await {
                    return;
                }
            }
        }
    };
    backoff.reset();
    let id = registration.id.as_str();
    loop {
        // Register until it works.
        loop {
            match agent.register(&registration, CALL_TIMEOUT).await {
                Ok(()) => {
                    state.send_modify(|state| {
                        state.registered = true;
                        state.registrations += 1;
                        state.last_error = None;
                    });
                    tracing::info!(%id, address = %registration.socket_addr(), "registered in Consul");
                    backoff.reset();
                    break;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%id, %error, retry_in = ?delay, "Consul registration failed");
                    fail(&error);
                    if !pause(&mut stop, delay).await {
                        return;
                    }
                }
            }
        }
        // Anti-entropy: only look, re-register only when the agent forgot us.
        loop {
            if !pause(&mut stop, options.anti_entropy_interval).await {
                return;
            }
            match agent.is_registered(id, CALL_TIMEOUT).await {
                Ok(true) => {
                    state.send_if_modified(|state| {
                        let changed = !state.registered || state.last_error.is_some();
                        state.registered = true;
                        state.last_error = None;
                        changed
                    });
                }
                Ok(false) => {
                    tracing::warn!(%id, "the Consul agent no longer knows this service: registering again");
                    state.send_modify(|state| state.registered = false);
                    break;
                }
                Err(error) => {
                    if state.borrow().registered {
                        tracing::warn!(%id, %error, "cannot check the Consul registration");
                    } else {
                        tracing::debug!(%id, %error, "cannot check the Consul registration");
                    }
                    fail(&error);
                }
            }
        }
    }
}
