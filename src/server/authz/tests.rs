//! The decision rules, without an agent (its address is a closed port: every
//! re-check fails, as when the agent is unreachable).

use std::time::{Duration, SystemTime};

use discovery::{connect::ConnectCa, ConsulConfig};
use futures::FutureExt as _;
use tokio::time::Instant;

use super::*;
use crate::connect::SpiffeId;

const RECHECK: Duration = Duration::from_secs(1);
const MAX_STALE: Duration = Duration::from_secs(10);

fn authorizer() -> Authorizer {
    let consul = ConsulConfig::new("127.0.0.1:1", None).expect("address");
    Authorizer::new(
        ConnectCa::new(&consul),
        "payments",
        AuthzPolicy {
            recheck: RECHECK,
            max_stale: MAX_STALE,
        },
    )
}

fn peer(service: &str) -> PeerCertificate {
    PeerCertificate {
        identity: SpiffeId::parse(&format!(
            "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/{service}"
        ))
        .expect("id"),
        serial: "0a".into(),
        not_after: SystemTime::now() + Duration::from_secs(3600),
    }
}

fn decision(allowed: bool) -> Decision {
    Decision {
        allowed,
        reason: "test".into(),
        confirmed: Instant::now(),
    }
}

/// A live authorization of `peer` after the agent said `allowed`.
fn live(authorizer: &Authorizer, peer: &PeerCertificate) -> LiveAuthorization {
    let shared = &authorizer.shared;
    let caller = shared.record(peer, decision(true));
    LiveAuthorization {
        decision: caller.subscribe(shared),
        caller,
        shared: shared.clone(),
    }
}

#[test]
fn a_decision_lets_in_only_when_allowed_and_young_enough() {
    let fresh = decision(true);
    assert_eq!(judge(&fresh, "orders", "payments", MAX_STALE), Ok(()));
    let denied = judge(&decision(false), "orders", "payments", MAX_STALE).unwrap_err();
    assert!(
        matches!(&denied, Refusal::Denied(message) if message.contains("orders may not call payments")),
        "{denied:?}"
    );
    let old = Decision {
        confirmed: Instant::now() - Duration::from_secs(11),
        ..decision(true)
    };
    let stale = judge(&old, "orders", "payments", MAX_STALE).unwrap_err();
    assert!(
        matches!(&stale, Refusal::Stale(message) if message.contains("--authz-max-stale (10s)")),
        "{stale:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deny_reaches_every_live_connection_of_the_caller_at_once() {
    let authorizer = authorizer();
    let orders = peer("orders");
    let mut first = live(&authorizer, &orders);
    let mut second = live(&authorizer, &orders);
    let mut other = live(&authorizer, &peer("users"));
    assert!(first.revoked().now_or_never().is_none());

    // What a new connection's admission (or the re-check) learns.
    authorizer.shared.record(&orders, decision(false));
    for live in [&mut first, &mut second] {
        let refusal = live.revoked().now_or_never().expect("revoked at once");
        assert!(matches!(refusal, Refusal::Denied(_)), "{refusal:?}");
    }
    assert!(
        other.revoked().now_or_never().is_none(),
        "another caller is not affected"
    );
}

#[tokio::test(start_paused = true)]
async fn without_answers_a_live_connection_is_served_until_the_bound() {
    let authorizer = authorizer();
    let orders = peer("orders");
    let mut live = live(&authorizer, &orders);
    let started = Instant::now();
    // Every re-check fails (nothing listens on port 1): served until the bound.
    let refusal = live.revoked().await;
    let after = started.elapsed();
    assert!(matches!(refusal, Refusal::Stale(_)), "{refusal:?}");
    assert!(
        after >= MAX_STALE && after < MAX_STALE + RECHECK,
        "refused after {after:?}"
    );
    assert!(metrics::oldest_decision_age() >= MAX_STALE);

    // A new connection is refused too: the last decision is too old.
    let refused = authorizer.admit(&orders).await.expect_err("too stale");
    assert!(matches!(refused, Refusal::Stale(_)), "{refused:?}");
    // And a caller the agent never answered for is refused at once.
    let unknown = authorizer.admit(&peer("users")).await.expect_err("unknown");
    assert!(
        matches!(&unknown, Refusal::Unconfirmed(message) if message.contains("cannot ask the Consul agent")),
        "{unknown:?}"
    );
}
