//! Authorization of inbound connections by Consul intentions
//! (`POST /v1/agent/connect/authorize`), kept per caller identity:
//!
//! - a new connection always asks the agent ([`Authorizer::admit`]); the
//!   answer becomes the caller's decision for its live connections too (a
//!   deny closes them all at once);
//! - while a caller has live connections, one task per caller asks the agent
//!   again every re-check period, beside the connections and never inside
//!   their loops (a slow agent stalls no request), each call bounded by
//!   [`AGENT_CALL_TIMEOUT`], backing off while the agent fails. Every live
//!   connection of the caller follows that one decision
//!   ([`LiveAuthorization::revoked`]), so a revoked intention reaches all of
//!   them within one period;
//! - while the agent does not answer, the last decision stands — logged as a
//!   warning and measured by `mesh_authz_oldest_decision_age_seconds` — for
//!   at most `--authz-max-stale` after the agent last confirmed it; past
//!   that the caller is refused, on live and new connections alike, until
//!   the agent answers again. A caller the agent never answered for is
//!   refused (fail closed). The caller's certificate bounds it too: the
//!   connection closes when it expires (`server::tls`).

mod caller;
mod metrics;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use discovery::connect::ConnectCa;
use tokio::{sync::watch, time::Instant};

use self::caller::Caller;
use crate::connect::{metrics::authz_decision, PeerCertificate};

/// Longest one authorize call to the agent may take; a slower answer counts
/// as no answer (the last decision stands, within the staleness bound).
pub(crate) const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// While the agent fails, re-checks back off up to this many periods.
const MAX_BACKOFF_PERIODS: u32 = 4;

/// How often decisions are re-checked and how long an unconfirmed one may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuthzPolicy {
    /// `--authz-recheck`: the period of a live caller's re-check.
    pub(crate) recheck: Duration,
    /// `--authz-max-stale`: how long after the agent's last answer a decision
    /// may still be used.
    pub(crate) max_stale: Duration,
}

/// What the agent said about a caller, and when.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    pub(crate) reason: String,
    /// When the question was asked: the decision's age counts from here.
    pub(crate) confirmed: Instant,
}

/// Why a caller may not (or no longer) use a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The intentions deny it.
    Denied(String),
    /// The agent has not confirmed the decision for longer than `--authz-max-stale`.
    Stale(String),
    /// The agent never answered for this caller.
    Unconfirmed(String),
}

impl Refusal {
    /// What the caller is told (PERMISSION_DENIED).
    pub(crate) fn message(&self) -> &str {
        match self {
            Refusal::Denied(message) | Refusal::Stale(message) | Refusal::Unconfirmed(message) => {
                message
            }
        }
    }
}

/// Asks the agent whether callers may connect to `target`.
#[derive(Debug, Clone)]
pub(crate) struct Authorizer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    ca: ConnectCa,
    target: String,
    policy: AuthzPolicy,
    /// Per caller SPIFFE ID; entries outlive their connections for
    /// `max_stale` (a new connection may fall back on them).
    callers: Mutex<HashMap<String, Arc<Caller>>>,
}

impl Authorizer {
    pub(crate) fn new(ca: ConnectCa, target: &str, policy: AuthzPolicy) -> Self {
        let shared = Arc::new(Shared {
            ca,
            target: target.to_owned(),
            policy,
            callers: Mutex::default(),
        });
        metrics::track(&shared);
        Self { shared }
    }

    /// The service name callers connect to.
    pub(crate) fn target(&self) -> &str {
        &self.shared.target
    }

    /// A new connection of `peer`: asks the agent. Without an answer the
    /// caller's last decision stands if younger than `--authz-max-stale`;
    /// without one the connection is refused (fail closed).
    pub(crate) async fn admit(&self, peer: &PeerCertificate) -> Result<LiveAuthorization, Refusal> {
        let shared = &self.shared;
        let uri = peer.identity.to_string();
        let admitted = match shared.ask(&uri, &peer.serial).await {
            Ok(decision) => {
                let caller = shared.record(peer, decision);
                shared.judge(&caller).map(|()| caller)
            }
            Err(error) => {
                authz_decision("error");
                match shared.caller(&uri) {
                    Some(caller) => {
                        let judged = shared.judge(&caller);
                        if judged.is_ok() {
                            shared.warn_stale(&caller, &error);
                        }
                        judged.map(|()| caller)
                    }
                    None => Err(Refusal::Unconfirmed(format!(
                        "{} may not call {}: cannot ask the Consul agent to authorize the connection ({error})",
                        peer.identity.service, shared.target
                    ))),
                }
            }
        };
        authz_decision(if admitted.is_ok() { "allow" } else { "deny" });
        admitted.map(|caller| LiveAuthorization {
            decision: caller.subscribe(shared),
            caller,
            shared: shared.clone(),
        })
    }
}

impl Shared {
    /// One authorize call, bounded by [`AGENT_CALL_TIMEOUT`].
    async fn ask(&self, uri: &str, serial: &str) -> Result<Decision, String> {
        let asked = Instant::now();
        let call = self.ca.authorize(&self.target, uri, serial);
        match tokio::time::timeout(AGENT_CALL_TIMEOUT, call).await {
            Ok(Ok(answer)) => Ok(Decision {
                allowed: answer.authorized,
                reason: answer.reason,
                confirmed: asked,
            }),
            Ok(Err(error)) => Err(discovery::error_chain(&error)),
            Err(_) => Err(format!(
                "no answer within {}s",
                AGENT_CALL_TIMEOUT.as_secs_f32()
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Caller>>> {
        self.callers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn caller(&self, uri: &str) -> Option<Arc<Caller>> {
        self.lock().get(uri).cloned()
    }

    /// Makes `decision` the caller's (its live connections follow it), and
    /// forgets callers without connections whose decisions are too old to use.
    fn record(&self, peer: &PeerCertificate, decision: Decision) -> Arc<Caller> {
        let uri = peer.identity.to_string();
        let mut callers = self.lock();
        let max_stale = self.policy.max_stale;
        callers.retain(|key, caller| {
            key == &uri || caller.is_live() || caller.current().confirmed.elapsed() <= max_stale
        });
        match callers.get(&uri) {
            Some(caller) => {
                caller.set_serial(&peer.serial);
                caller.decide(decision);
                caller.clone()
            }
            None => {
                let caller = Caller::new(peer, decision);
                callers.insert(uri, caller.clone());
                caller
            }
        }
    }

    /// Whether `caller`'s decision in force lets it in now.
    fn judge(&self, caller: &Caller) -> Result<(), Refusal> {
        judge(
            &caller.current(),
            caller.service(),
            &self.target,
            self.policy.max_stale,
        )
    }

    fn warn_stale(&self, caller: &Caller, error: &str) {
        let age = caller.current().confirmed.elapsed();
        tracing::warn!(
            caller = caller.uri(),
            target = %self.target,
            age_seconds = age.as_secs(),
            max_stale_seconds = self.policy.max_stale.as_secs(),
            %error,
            "cannot reach the Consul agent: serving on a stale authorization (the last decision) until --authz-max-stale"
        );
    }
}

/// Whether `decision` lets `service` call `target` now.
fn judge(
    decision: &Decision,
    service: &str,
    target: &str,
    max_stale: Duration,
) -> Result<(), Refusal> {
    if !decision.allowed {
        return Err(Refusal::Denied(format!(
            "{service} may not call {target}: denied by Consul intentions ({})",
            decision.reason
        )));
    }
    let age = decision.confirmed.elapsed();
    if age > max_stale {
        return Err(Refusal::Stale(format!(
            "cannot confirm that {service} may call {target}: the Consul agent has not \
             answered for {:.0}s, longer than --authz-max-stale ({:.0}s)",
            age.as_secs_f64(),
            max_stale.as_secs_f64()
        )));
    }
    Ok(())
}

/// A live connection's view of its caller's authorization (one per
/// connection; the re-check runs once per caller while any is held).
#[derive(Debug)]
pub(crate) struct LiveAuthorization {
    decision: watch::Receiver<Decision>,
    caller: Arc<Caller>,
    shared: Arc<Shared>,
}

impl LiveAuthorization {
    /// Resolves once the caller may no longer use the connection: the agent
    /// denied it, or the decision in force grew older than
    /// `--authz-max-stale`. Cancel-safe.
    pub(crate) async fn revoked(&mut self) -> Refusal {
        loop {
            let decision = self.decision.borrow_and_update().clone();
            let max_stale = self.shared.policy.max_stale;
            if let Err(refusal) = judge(
                &decision,
                self.caller.service(),
                &self.shared.target,
                max_stale,
            ) {
                return refusal;
            }
            // Past this instant the decision is too old (unless renewed first).
            let too_old = decision.confirmed + max_stale + Duration::from_millis(1);
            tokio::select! {
                changed = self.decision.changed() => {
                    if changed.is_err() {
                        // The caller's entry outlives its receivers: not reached.
                        std::future::pending::<()>().await;
                    }
                }
                () = tokio::time::sleep_until(too_old) => {}
            }
        }
    }
}
