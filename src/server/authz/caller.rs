//! One caller identity's decision, shared by all its connections, and the
//! task that re-checks it with the agent while any of them is live.

use std::sync::{Arc, Mutex};

use discovery::Backoff;
use tokio::sync::watch;

use super::{Decision, Shared, MAX_BACKOFF_PERIODS};
use crate::connect::{metrics::authz_decision, PeerCertificate};

/// A caller (one SPIFFE ID) and its decision in force.
#[derive(Debug)]
pub(super) struct Caller {
    uri: String,
    service: String,
    decision: watch::Sender<Decision>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The serial of its newest certificate (sent with each re-check).
    serial: String,
    /// Whether its re-check task runs.
    refreshing: bool,
}

impl Caller {
    pub(super) fn new(peer: &PeerCertificate, decision: Decision) -> Arc<Self> {
        Arc::new(Self {
            uri: peer.identity.to_string(),
            service: peer.identity.service.clone(),
            decision: watch::Sender::new(decision),
            state: Mutex::new(State {
                serial: peer.serial.clone(),
                refreshing: false,
            }),
        })
    }

    pub(super) fn uri(&self) -> &str {
        &self.uri
    }

    /// The caller's service name.
    pub(super) fn service(&self) -> &str {
        &self.service
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn set_serial(&self, serial: &str) {
        serial.clone_into(&mut self.state().serial);
    }

    /// The decision in force.
    pub(super) fn current(&self) -> Decision {
        self.decision.borrow().clone()
    }

    /// Puts `decision` in force for every live connection of the caller.
    pub(super) fn decide(&self, decision: Decision) {
        self.decision.send_replace(decision);
    }

    /// Whether a connection of this caller is live.
    pub(super) fn is_live(&self) -> bool {
        self.decision.receiver_count() > 0
    }

    /// Follows the caller's decision from a new live connection, and starts
    /// the re-check task unless it runs.
    pub(super) fn subscribe(self: &Arc<Self>, shared: &Arc<Shared>) -> watch::Receiver<Decision> {
        let mut state = self.state();
        let receiver = self.decision.subscribe();
        if !state.refreshing {
            state.refreshing = true;
            tokio::spawn(recheck(shared.clone(), self.clone()));
        }
        receiver
    }

    /// Whether the re-check task should go on; stops it (atomically with
    /// [`Caller::subscribe`]) once no connection is live.
    fn keep_rechecking(&self) -> bool {
        let mut state = self.state();
        if self.is_live() {
            return true;
        }
        state.refreshing = false;
        false
    }
}

/// Asks the agent about `caller` every period while it has live connections:
/// the next re-check starts one period after the previous one has finished
/// (a slow agent never makes them pile up), and backs off up to
/// [`MAX_BACKOFF_PERIODS`] periods while the agent fails.
async fn recheck(shared: Arc<Shared>, caller: Arc<Caller>) {
    let recheck = shared.policy.recheck;
    let mut backoff = Backoff::new(recheck, recheck * MAX_BACKOFF_PERIODS);
    let mut delay = recheck;
    loop {
        tokio::time::sleep(delay).await;
        if !caller.keep_rechecking() {
            return;
        }
        let serial = caller.state().serial.clone();
        delay = match shared.ask(&caller.uri, &serial).await {
            Ok(decision) => {
                if !decision.allowed && caller.current().allowed {
                    authz_decision("deny");
                    tracing::warn!(caller = %caller.uri, target = %shared.target, reason = %decision.reason, "intention revoked: closing the caller's live connections");
                }
                caller.decide(decision);
                backoff.reset();
                recheck
            }
            Err(error) => {
                authz_decision("error");
                if shared.judge(&caller).is_ok() {
                    shared.warn_stale(&caller, &error);
                }
                backoff.next_delay()
            }
        };
    }
}
