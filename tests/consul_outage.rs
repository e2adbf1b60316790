//! Consul stopped during traffic: the client keeps its last known endpoints
//! (and says they are stale), no call fails, and after the agent comes back
//! the services register again by themselves.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{drive, wait_endpoints, PaymentsMesh};
use mesh::{
    client::ClientOptions,
    proto::payments::v1::{payments_client::PaymentsClient, ChargeRequest},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consul_stopped_during_traffic_fails_no_call() {
    let mesh = PaymentsMesh::start(3);
    let client = mesh.client(ClientOptions {
        watch_wait: Duration::from_secs(2),
        ..ClientOptions::default()
    });
    wait_endpoints(&client, "payments", 3).await;
    let mut payments = PaymentsClient::new(client.channel("payments"));
    let payment_id = payments
        .charge(ChargeRequest {
            idempotency_key: "outage-seed".into(),
            user_id: "u_outage".into(),
            amount_cents: 500,
            currency: "EUR".into(),
        })
        .await
        .expect("seed charge")
        .into_inner()
        .payment_id;

    let agent = Arc::new(Mutex::new(mesh.agent));
    let (stop_consul, stopped) = tokio::sync::oneshot::channel::<()>();
    let trigger = Arc::new(Mutex::new(Some(stop_consul)));
    let killer = {
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || {
            let _ = stopped.blocking_recv();
            agent.lock().unwrap().kill();
        })
    };
    let outcomes = drive(3000, 8, {
        let payments = payments.clone();
        let payment_id = payment_id.clone();
        move |i| {
            if i == 500 {
                if let Some(stop) = trigger.lock().unwrap().take() {
                    let _ = stop.send(());
                }
            }
            common::get_payment(&payments, payment_id.clone())
        }
    })
    .await;
    killer.await.expect("killer");
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");
    assert_eq!(outcomes.ok, 3000);

    // The resolver notices the outage and keeps the last set.
    let resolver = client.resolver("payments");
    tokio::time::timeout(Duration::from_secs(20), async {
        while !resolver.snapshot().stale {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the resolver reports stale state while Consul is down");
    assert_eq!(resolver.snapshot().endpoints.len(), 3);
    let during = drive(300, 8, {
        let payments = payments.clone();
        move |_| common::get_payment(&payments, payment_id.clone())
    })
    .await;
    assert_eq!(during.failed(), 0, "{during:?}");

    // The agent comes back empty; the services register again on their own.
    tokio::task::spawn_blocking({
        let agent = agent.clone();
        move || {
            let mut agent = agent.lock().unwrap();
            agent.restart();
            agent.wait_passing("payments", 3, Duration::from_secs(30));
        }
    })
    .await
    .expect("restart");
    tokio::time::timeout(Duration::from_secs(20), async {
        while resolver.snapshot().stale || resolver.snapshot().endpoints.len() != 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the resolver is fresh again with 3 endpoints");
    let _ = &mut payments;
}
