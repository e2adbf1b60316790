//! Retries and Charge, counted on the servers: Charge is IDEMPOTENT by its
//! key, so an attempt that timed out is re-sent to another instance and the
//! key is still charged exactly once (the second delivery returns the first
//! payment); a Charge refused at connect time is retried elsewhere and never
//! replayed (it provably never reached a server). That a non-idempotent
//! method is not retried after it may have run is the retry policy's unit
//! test (`src/client/retry.rs`).

mod common;

use std::time::Duration;

use common::{drive, wait_endpoints, PaymentsMesh};
use mesh::{
    client::ClientOptions,
    proto::payments::v1::{payments_client::PaymentsClient, ChargeRequest},
};

fn charges(mesh: &PaymentsMesh, outcome: &str) -> f64 {
    mesh.instances
        .iter()
        .map(|instance| {
            testkit::scrape_metrics(&instance.metrics)
                .sum("payments_charges_total", &[("outcome", outcome)])
        })
        .sum()
}

fn charge(i: usize, prefix: &str) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: format!("{prefix}-{i}"),
        user_id: "u_retry".into(),
        amount_cents: 100 + i as i64,
        currency: "EUR".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timed_out_charge_is_resent_elsewhere_and_charged_once() {
    let slow = vec!["--inject-latency".to_owned(), "400".to_owned()];
    let mesh = PaymentsMesh::start_with(&[Vec::new(), Vec::new(), slow]);
    let client = mesh.client(ClientOptions {
        per_try_timeout: Duration::from_millis(150),
        ..ClientOptions::default()
    });
    wait_endpoints(&client, "payments", 3).await;
    let payments = PaymentsClient::new(client.channel("payments"));
    let outcomes = drive(300, 8, move |i| {
        common::charge(&payments, charge(i, "timeout"))
    })
    .await;
    // Let the slow instance finish the attempts the client gave up on.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let created = charges(&mesh, "created");
    let replayed = charges(&mesh, "replayed");
    let retries = client.metrics("payments").snapshot().retries;
    eprintln!("outcomes {outcomes:?}; created {created}, replayed {replayed}, retries {retries}");
    assert!(
        retries > 0,
        "the slow instance timed no attempt out: {outcomes:?}"
    );
    assert!(replayed > 0.0, "no re-sent Charge met its first delivery");
    assert_eq!(created, 300.0, "every key was charged exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_charge_refused_at_connect_is_retried_elsewhere() {
    // A long check interval keeps the dead instance in Consul (and so in the
    // balancer) during the test, almost always: Consul's next check may still
    // land in the window, which is why the proof below is the retry count.
    // Ejection is off so that the dead endpoint keeps being tried.
    let slow_checks = vec!["--check-interval".to_owned(), "10000".to_owned()];
    let mut mesh = PaymentsMesh::start_with(&vec![slow_checks; 3]);
    let client = mesh.client(ClientOptions {
        eject_after_failures: 1000,
        ..ClientOptions::default()
    });
    wait_endpoints(&client, "payments", 3).await;
    let payments = PaymentsClient::new(client.channel("payments"));
    // Warm every connection, then kill one instance: its port now refuses.
    let warm = drive(60, 6, {
        let payments = payments.clone();
        move |i| common::charge(&payments, charge(i, "warm"))
    })
    .await;
    assert_eq!(warm.failed(), 0, "{warm:?}");
    let mut victim = mesh.instances.remove(0);
    victim.process.child.kill();
    // Let the client see its connection close: a request written into a
    // connection the peer is closing ("broken pipe") may have reached it and
    // is rightly not retried; a new connection attempt is refused for sure.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let outcomes = drive(200, 8, move |i| {
        common::charge(&payments, charge(i, "refused"))
    })
    .await;
    let created = charges(&mesh, "created");
    let replayed = charges(&mesh, "replayed");
    eprintln!(
        "outcomes {outcomes:?}; survivors created {created}, replayed {replayed}; client {:?}",
        client.metrics("payments").snapshot()
    );
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");
    assert_eq!(replayed, 0.0);
    assert!(created >= 200.0, "the survivors created {created} payments");
    assert_eq!(
        mesh.agent.passing_ids("payments").len(),
        3,
        "the dead instance was still in Consul"
    );
    assert!(
        client.metrics("payments").snapshot().retries >= 1,
        "no Charge met the refused endpoint, so nothing was proven"
    );
}
