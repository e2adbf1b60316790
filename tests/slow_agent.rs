//! A slow or unreachable Consul agent behind a live mTLS connection: the
//! periodic re-authorization of the connection must never stall serving.
//! A fault proxy sits between `payments` and its (real) agent, so only that
//! service's agent calls are delayed or blackholed.

mod mtls_fixture;

use std::time::Duration;

use mtls_fixture::{dial, identity, median_and_failures, paced_checks, payments};
use testkit::{ConsulAgent, Fault, FaultProxy};

/// Calls per phase, started this often: 2 s of open-loop traffic.
const CALLS: usize = 80;
const EVERY: Duration = Duration::from_millis(25);
/// A call answered later than this counts as failed (far above any stall
/// the fix allows, below what the old code produced).
const CALL_LIMIT: Duration = Duration::from_secs(15);
/// The median may grow by the baseline's own size, and by a floor for a
/// loaded machine's scheduling noise on a sub-millisecond baseline.
const NOISE_FLOOR: Duration = Duration::from_millis(20);

/// Hardening finding 9: a slow agent froze live connections. The periodic
/// re-check awaited `/v1/agent/connect/authorize` inside the connection's
/// own `select!`, so while the agent hung the connection was not polled at
/// all (observed: calls stalled 6 s behind a 6 s delay, 40 s behind a
/// blackholed agent). The re-check must run beside the connection: call
/// latency on the live connection stays within 2× its baseline (medians of
/// paced calls) while the agent answers 3 s late, and while it does not
/// answer at all — and no call fails (the last decision stands meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_blackholed_agent_does_not_stall_live_connections() {
    let agent = ConsulAgent::start();
    let proxy = FaultProxy::start(&agent.http_addr());
    // Re-check every 300 ms: several re-checks fall into every phase.
    let (payments, _) = payments(&proxy.addr(), &["--authz-recheck", "300"], &[]);
    let orders = identity(&agent, "orders").await;
    let live = dial(&payments.addr(), &orders).await;

    let baseline = paced_checks(&live, CALLS, EVERY, CALL_LIMIT).await;
    let (baseline, failures) = median_and_failures(&baseline);
    assert!(failures.is_empty(), "baseline failures: {failures:?}");
    let bound = (baseline * 2).max(baseline + NOISE_FLOOR);
    eprintln!("baseline median {baseline:?}, bound {bound:?}");

    let mut violations = Vec::new();
    for (phase, fault) in [
        (
            "agent answering 3 s late",
            Fault::Delay(Duration::from_secs(3)),
        ),
        ("agent blackholed", Fault::Blackhole),
    ] {
        proxy.set(fault);
        // Let re-checks start against the faulty agent first.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let outcomes = paced_checks(&live, CALLS, EVERY, CALL_LIMIT).await;
        let (median, failures) = median_and_failures(&outcomes);
        let shown = if median == Duration::MAX {
            "no answer".to_owned()
        } else {
            format!("{median:?}")
        };
        eprintln!("{phase}: median {shown}, failures {failures:?}");
        if median > bound {
            violations.push(format!(
                "{phase}: median {shown} > 2× baseline ({baseline:?}, bound {bound:?})"
            ));
        }
        if !failures.is_empty() {
            violations.push(format!("{phase}: failed calls {failures:?}"));
        }
    }
    proxy.set(Fault::Pass);
    assert!(
        violations.is_empty(),
        "live connection stalled by the agent: {violations:#?}"
    );
}
