//! Authorization of inbound connections by Consul intentions
//! (`POST /v1/agent/connect/authorize`): every new connection is checked with
//! the agent; live connections are checked again every `recheck` period from
//! a cache per caller identity (one agent call per caller and period, however
//! many connections it has), so that a revoked intention closes them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use discovery::connect::ConnectCa;
use tokio::time::Instant;

use crate::connect::{metrics, PeerCertificate};

/// A decision on one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    pub(crate) reason: String,
}

#[derive(Debug, Clone)]
struct Cached {
    decision: Decision,
    at: Instant,
}

/// Asks the agent whether callers may connect to `target`.
#[derive(Debug, Clone)]
pub(crate) struct Authorizer {
    ca: Arc<ConnectCa>,
    target: Arc<str>,
    recheck: Duration,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

impl Authorizer {
    pub(crate) fn new(ca: ConnectCa, target: &str, recheck: Duration) -> Self {
        Self {
            ca: Arc::new(ca),
            target: target.into(),
            recheck,
            cache: Arc::default(),
        }
    }

    /// The service name callers connect to.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The re-check period of live connections.
    pub(crate) fn recheck(&self) -> Duration {
        self.recheck
    }

    /// A new connection: always asks the agent. When the agent cannot be
    /// asked, the last decision on this caller stands; with none, the
    /// connection is refused (fail closed).
    pub(crate) async fn admit(&self, peer: &PeerCertificate) -> Decision {
        let decision = self.ask(peer).await;
        metrics::authz_decision(if decision.allowed { "allow" } else { "deny" });
        decision
    }

    /// A live connection: the cached decision when younger than the re-check
    /// period, else the agent's.
    pub(crate) async fn recheck_live(&self, peer: &PeerCertificate) -> Decision {
        let key = peer.identity.to_string();
        if let Some(cached) = self.cached(&key) {
            if cached.at.elapsed() < self.recheck {
                return cached.decision;
            }
        }
        let decision = self.ask(peer).await;
        if !decision.allowed {
            metrics::authz_decision("deny");
        }
        decision
    }

    fn cached(&self, key: &str) -> Option<Cached> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned()
    }

    async fn ask(&self, peer: &PeerCertificate) -> Decision {
        let key = peer.identity.to_string();
        match self.ca.authorize(&self.target, &key, &peer.serial).await {
            Ok(answer) => {
                let decision = Decision {
                    allowed: answer.authorized,
                    reason: answer.reason,
                };
                self.cache
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(
                        key,
                        Cached {
                            decision: decision.clone(),
                            at: Instant::now(),
                        },
                    );
                decision
            }
            Err(error) => {
                metrics::authz_decision("error");
                match self.cached(&key) {
                    Some(cached) => {
                        tracing::warn!(%error, caller = %key, allowed = cached.decision.allowed, "cannot ask the Consul agent to authorize: keeping the last decision");
                        cached.decision
                    }
                    None => Decision {
                        allowed: false,
                        reason: format!(
                            "cannot ask the Consul agent to authorize the connection: {error}"
                        ),
                    },
                }
            }
        }
    }
}
