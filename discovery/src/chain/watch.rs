//! The watch of one service's discovery chain: a blocking-query loop with the
//! health watch's rules (index reset, rate limit, backoff with jitter), that
//! keeps the last good chain through a Consul outage.

use std::{fmt, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tracing::Instrument;

use super::{fetch::fetch, model::DiscoveryChain};
use crate::{
    blocking::{BlockingLoop, Failed},
    config::ConsulConfig,
    error::ConsulError,
    health::DEFAULT_WAIT,
    http::ConsulHttp,
};

/// Tuning of a [`ChainWatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainWatchOptions {
    /// Longest blocking wait per request (default 5 min, capped at Consul's 10 min).
    pub wait: Duration,
    /// First retry delay after a failed request (default 100 ms).
    pub min_backoff: Duration,
    /// Longest retry delay (default 10 s).
    pub max_backoff: Duration,
}

impl Default for ChainWatchOptions {
    fn default() -> Self {
        Self {
            wait: DEFAULT_WAIT,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What the watch knows at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainState {
    /// The last chain Consul gave (kept while Consul is unreachable).
    pub chain: Option<Arc<DiscoveryChain>>,
    /// `X-Consul-Index` of the last answer.
    pub index: u64,
    /// The last request failed: `chain` is the last good one.
    pub stale: bool,
    /// Why the last request failed, cleared by the next answer.
    pub last_error: Option<String>,
    /// The last request was refused by Consul's ACLs (403), with the reason
    /// and what the token needs; cleared by the next answer.
    pub refused: Option<String>,
    /// The agent has no discovery chains (404: Consul before 1.6): `chain`
    /// is then Consul's default chain (the whole service) and the watch stops.
    pub unsupported: bool,
    /// Answers that changed the chain (the first counts).
    pub updates: u64,
    /// Failed requests.
    pub errors: u64,
}

/// Watches `GET /v1/discovery-chain/<service>` and publishes [`ChainState`]s.
///
/// Cheap to clone; the background task ends when the last clone is dropped.
#[derive(Clone)]
pub struct ChainWatch {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    state: watch::Receiver<ChainState>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for ChainWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.borrow();
        f.debug_struct("ChainWatch")
            .field("service", &self.inner.service)
            .field("index", &state.index)
            .field("stale", &state.stale)
            .finish_non_exhaustive()
    }
}

impl ChainWatch {
    /// Starts the watch of `service`'s chain: a plain read, then blocking
    /// queries on the returned index. Must be called inside a tokio runtime.
    pub fn spawn(config: &ConsulConfig, service: &str, options: ChainWatchOptions) -> Self {
        let (sender, state) = watch::channel(ChainState::default());
        let span = tracing::info_span!("consul_chain_watch", service = %service);
        let task = tokio::spawn(
            run(ConsulHttp::new(config), service.to_owned(), options, sender).instrument(span),
        );
        Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                state,
                task,
            }),
        }
    }

    /// The service whose chain is watched.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The state now.
    pub fn state(&self) -> ChainState {
        self.inner.state.borrow().clone()
    }

    /// Follows the state: notified when the chain, or the error state, changes.
    pub fn subscribe(&self) -> watch::Receiver<ChainState> {
        self.inner.state.clone()
    }
}

async fn run(
    http: ConsulHttp,
    service: String,
    options: ChainWatchOptions,
    sender: watch::Sender<ChainState>,
) {
    let mut watch = BlockingLoop::new(options.min_backoff, options.max_backoff);
    loop {
        let answer = watch
            .next(|index| fetch(&http, &service, index, options.wait))
            .await;
        match answer {
            Ok(chain) => publish(&sender, chain),
            Err(Failed {
                error: ConsulError::Status { status: 404, .. },
                ..
            }) => {
                tracing::warn!(
                    "this Consul has no discovery chains (404 on /v1/discovery-chain): \
                     routing to every instance of the service, ignoring config entries"
                );
                sender.send_modify(|state| {
                    state.chain = Some(Arc::new(DiscoveryChain::default_for(&service)));
                    state.unsupported = true;
                    state.updates += 1;
                });
                return;
            }
            Err(Failed { error, retry_in }) => {
                sender.send_modify(|state| {
                    if !state.stale {
                        tracing::warn!(
                            %error,
                            ?retry_in,
                            kept = state.chain.is_some(),
                            "Consul discovery-chain query failed: keeping the last chain"
                        );
                    }
                    state.stale = true;
                    state.errors += 1;
                    state.refused =
                        matches!(error, ConsulError::Denied { .. }).then(|| error.to_string());
                    state.last_error = Some(error.to_string());
                });
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

/// Stores an answer; subscribers hear of it when the chain or the error state changed.
fn publish(sender: &watch::Sender<ChainState>, chain: DiscoveryChain) {
    sender.send_if_modified(|state| {
        let changed = state.chain.as_deref() != Some(&chain);
        let notify = changed || state.stale || state.last_error.is_some();
        if state.stale {
            tracing::info!("Consul answers again");
        }
        if changed {
            tracing::debug!(start = %chain.start_node, "discovery chain changed");
            state.chain = Some(Arc::new(chain));
            state.updates += 1;
        }
        state.stale = false;
        state.last_error = None;
        state.refused = None;
        notify
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_chain_notifies_an_identical_one_does_not() {
        let (sender, mut receiver) = watch::channel(ChainState::default());
        let canary =
            DiscoveryChain::parse(include_bytes!("../../tests/fixtures/chain_canary.json"))
                .unwrap();
        publish(&sender, canary.clone());
        assert!(receiver.has_changed().unwrap());
        assert_eq!(receiver.borrow_and_update().updates, 1);
        publish(&sender, canary.clone());
        assert!(
            !receiver.has_changed().unwrap(),
            "a wait that ran out changes nothing"
        );
        sender.send_modify(|state| {
            state.stale = true;
            state.last_error = Some("down".into());
        });
        receiver.borrow_and_update();
        publish(&sender, canary);
        let state = receiver.borrow_and_update().clone();
        assert!(!state.stale && state.last_error.is_none());
        assert_eq!(state.updates, 1, "the chain itself did not change");
    }
}
