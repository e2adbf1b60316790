//! One watch of the Connect CA roots and of a service's leaf: two blocking-query
//! loops (index + wait, index reset when it goes backwards, rate limit,
//! backoff with jitter, last good value kept on errors — the health watch's
//! rules) that publish into one `tokio::sync::watch`.

use std::{fmt, future::Future, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tracing::Instrument;

use super::api::{CaRoots, ConnectCa, Indexed, LeafCert};
use crate::{
    backoff::{Backoff, RateLimit},
    config::ConsulConfig,
    error::ConsulError,
    health::{next_index, DEFAULT_WAIT},
};

/// Tuning of a [`CaWatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaWatchOptions {
    /// Longest blocking wait per request (default 5 min).
    pub wait: Duration,
    /// First retry delay after a failure (default 100 ms).
    pub min_backoff: Duration,
    /// Longest retry delay (default 10 s).
    pub max_backoff: Duration,
}

impl Default for CaWatchOptions {
    fn default() -> Self {
        Self {
            wait: DEFAULT_WAIT,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What the watch knows.
#[derive(Debug, Clone, Default)]
pub struct CaWatchState {
    /// The last roots the agent gave.
    pub roots: Option<Arc<CaRoots>>,
    /// The last leaf the agent gave.
    pub leaf: Option<Arc<LeafCert>>,
    /// Why the last request failed (cleared by the next answer of that loop).
    pub last_error: Option<String>,
}

/// Watches `/v1/agent/connect/ca/roots` and `/v1/agent/connect/ca/leaf/<service>`.
/// The loops stop when the last clone is dropped.
#[derive(Clone)]
pub struct CaWatch {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    state: watch::Receiver<CaWatchState>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for CaWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaWatch")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

/// Each loop may start this many requests back to back, then one per
/// [`RATE_INTERVAL`] (as the health watch).
const RATE_BURST: u32 = 5;
const RATE_INTERVAL: Duration = Duration::from_millis(200);

impl CaWatch {
    /// Starts both loops for the identity `service`. Must be called inside a tokio runtime.
    pub fn spawn(config: &ConsulConfig, service: &str, options: CaWatchOptions) -> Self {
        let ca = ConnectCa::new(config);
        let (sender, state) = watch::channel(CaWatchState::default());
        let sender = Arc::new(sender);
        let roots = {
            let (ca, sender, options) = (ca.clone(), sender.clone(), options.clone());
            let wait = options.wait;
            tokio::spawn(
                run(
                    options,
                    sender,
                    move |index| {
                        let ca = ca.clone();
                        async move { ca.roots(index, wait).await }
                    },
                    |state, roots| state.roots = Some(Arc::new(roots)),
                )
                .instrument(tracing::info_span!("connect_roots_watch")),
            )
        };
        let leaf = {
            let name = service.to_owned();
            let wait = options.wait;
            tokio::spawn(
                run(
                    options,
                    sender,
                    move |index| {
                        let (ca, name) = (ca.clone(), name.clone());
                        async move { ca.leaf(&name, index, wait).await }
                    },
                    |state, leaf| state.leaf = Some(Arc::new(leaf)),
                )
                .instrument(tracing::info_span!("connect_leaf_watch", identity = %service)),
            )
        };
        Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                state,
                tasks: [roots, leaf],
            }),
        }
    }

    /// The identity (service name) whose leaf is watched.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Follows the state: notified on every new roots or leaf answer and on errors.
    pub fn subscribe(&self) -> watch::Receiver<CaWatchState> {
        self.inner.state.clone()
    }
}

async fn run<T, F, Fut>(
    options: CaWatchOptions,
    sender: Arc<watch::Sender<CaWatchState>>,
    fetch: F,
    store: fn(&mut CaWatchState, T),
) where
    T: PartialEq + Clone,
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<Indexed<T>, ConsulError>>,
{
    let mut backoff = Backoff::new(options.min_backoff, options.max_backoff);
    let mut limit = RateLimit::new(RATE_BURST, RATE_INTERVAL);
    let mut index = 0;
    let mut last: Option<T> = None;
    loop {
        limit.acquire().await;
        match fetch(index).await {
            Ok(answer) => {
                backoff.reset();
                index = next_index(index, answer.index);
                if last.as_ref() == Some(&answer.value) {
                    // The wait ran out with nothing new.
                    sender.send_if_modified(|state| state.last_error.take().is_some());
                    continue;
                }
                sender.send_modify(|state| {
                    state.last_error = None;
                    store(state, answer.value.clone());
                });
                // Kept to tell a new answer from a wait that ran out.
                last = Some(answer.value);
            }
            Err(error) => {
                index = 0;
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "Connect CA query failed: keeping the last certificates");
                sender.send_modify(|state| state.last_error = Some(error.to_string()));
                tokio::time::sleep(delay).await;
            }
        }
    }
}
