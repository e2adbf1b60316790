//! [`Identity`]: a service's live Connect credentials. A watch of the agent's
//! roots and leaf (blocking queries) rebuilds the TLS configurations whenever
//! either changes; every new connection uses the newest, so a rotated leaf or
//! root takes effect without a restart.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, LazyLock, Mutex, Weak},
    time::{Duration, SystemTime},
};

use discovery::{
    connect::{CaWatch, CaWatchOptions, CaWatchState},
    ConsulConfig,
};
use rustls::{ClientConfig, ServerConfig};
use tokio::{sync::watch, task::JoinHandle};

use super::{
    credentials::{unix_seconds, Credentials, CredentialsError},
    metrics, tls,
};

/// Why an identity cannot be used right now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    /// No certificate from the agent yet.
    #[error("no Connect certificate for {identity} yet{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NotReady {
        /// Whose.
        identity: String,
        /// The agent's last error, if any.
        last_error: Option<String>,
    },
    /// The credentials are unusable (expired leaf, bad PEM…).
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// rustls refused the material.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(String),
}

/// The credentials in force and the server configuration built from them.
#[derive(Debug)]
pub struct CurrentIdentity {
    /// The parsed key material.
    pub credentials: Credentials,
    /// Bumped on every change (client configurations are rebuilt then).
    pub generation: u64,
    server: Arc<ServerConfig>,
}

/// A service's Connect identity, shared by its server and its clients.
/// Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    state: watch::Receiver<Option<Arc<CurrentIdentity>>>,
    last_error: watch::Receiver<Option<String>>,
    clients: Mutex<HashMap<String, (u64, Arc<ClientConfig>)>>,
    task: Option<JoinHandle<()>>,
    _ca: Option<CaWatch>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current();
        f.debug_struct("Identity")
            .field("name", &self.inner.name)
            .field(
                "serial",
                &current
                    .as_ref()
                    .map(|current| current.credentials.serial.clone()),
            )
            .finish()
    }
}

type Shared = Mutex<HashMap<(String, String), Weak<Inner>>>;

impl Identity {
    /// The identity `service` as issued by the agent at `consul`, kept current
    /// by a blocking-query watch. One watch per agent and service per process:
    /// a server and its upstream clients share it. Returns at once; see
    /// [`Identity::ready`]. Must be called inside a tokio runtime.
    pub fn watch(consul: &ConsulConfig, service: &str) -> Identity {
        static SHARED: LazyLock<Shared> = LazyLock::new(Shared::default);
        let key = (consul.base_url().to_owned(), service.to_owned());
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(inner) = shared.get(&key).and_then(Weak::upgrade) {
            return Identity { inner };
        }
        let ca = CaWatch::spawn(consul, service, CaWatchOptions::default());
        let (sender, state) = watch::channel(None);
        let (error_sender, last_error) = watch::channel(None);
        let task = tokio::spawn(follow(
            service.to_owned(),
            ca.subscribe(),
            sender,
            error_sender,
        ));
        let inner = Arc::new(Inner {
            name: service.to_owned(),
            state,
            last_error,
            clients: Mutex::default(),
            task: Some(task),
            _ca: Some(ca),
        });
        shared.insert(key, Arc::downgrade(&inner));
        Identity { inner }
    }

    /// A fixed identity (tests, tools): no watch, no rotation.
    pub fn fixed(credentials: Credentials) -> Result<Identity, IdentityError> {
        Self::updatable(credentials).map(|(identity, _)| identity)
    }

    /// An identity whose credentials come from the caller instead of an
    /// agent (tests, tools holding their own CA): `credentials` now, and
    /// whatever [`IdentityUpdater::replace`] installs later. New connections
    /// use the newest, exactly as with [`Identity::watch`].
    pub fn updatable(
        credentials: Credentials,
    ) -> Result<(Identity, IdentityUpdater), IdentityError> {
        let name = credentials.identity.service.clone();
        let current = build(credentials, 1)?;
        let (sender, state) = watch::channel(Some(Arc::new(current)));
        let (_error_sender, last_error) = watch::channel(None);
        let identity = Identity {
            inner: Arc::new(Inner {
                name,
                state,
                last_error,
                clients: Mutex::default(),
                task: None,
                _ca: None,
            }),
        };
        Ok((identity, IdentityUpdater { sender }))
    }

    /// The service name this identity was issued for.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The credentials in force, if any arrived yet.
    pub fn current(&self) -> Option<Arc<CurrentIdentity>> {
        self.inner.state.borrow().clone()
    }

    /// Follows changes of the credentials.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<CurrentIdentity>>> {
        self.inner.state.clone()
    }

    /// Waits (at most `timeout`) for the first credentials.
    pub async fn ready(&self, timeout: Duration) -> Result<Arc<CurrentIdentity>, IdentityError> {
        let mut state = self.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Some(current) = state.borrow_and_update().clone() {
                    return Some(current);
                }
                if state.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match waited {
            Ok(Some(current)) => Ok(current),
            _ => Err(self.not_ready()),
        }
    }

    fn not_ready(&self) -> IdentityError {
        IdentityError::NotReady {
            identity: self.inner.name.clone(),
            last_error: self.inner.last_error.borrow().clone(),
        }
    }

    /// The current, unexpired credentials.
    pub fn fresh(&self) -> Result<Arc<CurrentIdentity>, IdentityError> {
        let current = self.current().ok_or_else(|| self.not_ready())?;
        current.credentials.check_fresh(SystemTime::now())?;
        Ok(current)
    }

    /// The server configuration for a new connection; refused when the leaf expired.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, IdentityError> {
        Ok(self.fresh()?.server.clone())
    }

    /// The client configuration for a new connection to `target` (a service
    /// name); refused when the leaf expired. Cached per target until the
    /// credentials change.
    pub fn client_config(&self, target: &str) -> Result<Arc<ClientConfig>, IdentityError> {
        let current = self.fresh()?;
        let mut clients = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((generation, config)) = clients.get(target) {
            if *generation == current.generation {
                return Ok(config.clone());
            }
        }
        let config = tls::client_config(&current.credentials, target)
            .map_err(|error| IdentityError::Tls(error.to_string()))?;
        clients.insert(target.to_owned(), (current.generation, config.clone()));
        Ok(config)
    }
}

/// Installs credentials into an identity made by [`Identity::updatable`].
#[derive(Debug)]
pub struct IdentityUpdater {
    sender: watch::Sender<Option<Arc<CurrentIdentity>>>,
}

impl IdentityUpdater {
    /// Puts `credentials` in force for every new connection; connections
    /// already open keep the certificate they were made with.
    pub fn replace(&self, credentials: Credentials) -> Result<(), IdentityError> {
        let generation = self
            .sender
            .borrow()
            .as_ref()
            .map_or(0, |current| current.generation);
        let current = build(credentials, generation + 1)?;
        self.sender.send_replace(Some(Arc::new(current)));
        Ok(())
    }
}

fn build(credentials: Credentials, generation: u64) -> Result<CurrentIdentity, IdentityError> {
    let server =
        tls::server_config(&credentials).map_err(|error| IdentityError::Tls(error.to_string()))?;
    Ok(CurrentIdentity {
        credentials,
        generation,
        server,
    })
}

/// Turns each new (roots, leaf) pair from the agent into credentials.
async fn follow(
    name: String,
    mut ca: watch::Receiver<CaWatchState>,
    sender: watch::Sender<Option<Arc<CurrentIdentity>>>,
    errors: watch::Sender<Option<String>>,
) {
    let mut generation = 0;
    let mut last: Option<(usize, usize)> = None;
    loop {
        let state = ca.borrow_and_update().clone();
        errors.send_replace(state.last_error.clone());
        if let (Some(roots), Some(leaf)) = (&state.roots, &state.leaf) {
            let key = (Arc::as_ptr(roots) as usize, Arc::as_ptr(leaf) as usize);
            if last != Some(key) {
                last = Some(key);
                let pems: Vec<&str> = roots
                    .roots
                    .iter()
                    .map(|root| root.root_cert_pem.as_str())
                    .collect();
                let loaded = Credentials::from_pem(
                    &pems,
                    &roots.trust_domain,
                    &leaf.cert_pem,
                    &leaf.private_key_pem,
                )
                .map_err(IdentityError::from)
                .and_then(|credentials| build(credentials, generation + 1));
                match loaded {
                    Ok(current) => {
                        generation += 1;
                        let credentials = &current.credentials;
                        if let Err(error) = credentials.check_fresh(SystemTime::now()) {
                            tracing::error!(identity = %name, %error, "the agent gave an expired leaf: not serving mesh traffic with it");
                        }
                        tracing::info!(
                            identity = %credentials.identity,
                            serial = %credentials.serial,
                            expires_unix = unix_seconds(credentials.not_after),
                            roots = roots.roots.len(),
                            "Connect certificate loaded"
                        );
                        metrics::identity_loaded(&name, credentials.not_after);
                        sender.send_replace(Some(Arc::new(current)));
                    }
                    Err(error) => {
                        tracing::error!(identity = %name, %error, "cannot use the agent's Connect certificate: keeping the previous one");
                        errors.send_replace(Some(error.to_string()));
                    }
                }
            }
        }
        if ca.changed().await.is_err() {
            return;
        }
    }
}
