//! Failover through the mesh client: SIGKILL of one of three instances during
//! a stream of idempotent calls fails nothing; SIGKILL of the only instance
//! fails fast with a clear UNAVAILABLE, and calls succeed again once a new
//! instance passes its check.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{drive, wait_endpoints, wait_passing, PaymentsMesh};
use mesh::{
    client::ClientOptions,
    proto::payments::v1::{payments_client::PaymentsClient, ChargeRequest, GetPaymentRequest},
};

async fn charge_one(payments: &mut PaymentsClient<mesh::client::Channel>) -> String {
    payments
        .charge(ChargeRequest {
            idempotency_key: "failover-seed".into(),
            user_id: "u_failover".into(),
            amount_cents: 1200,
            currency: "EUR".into(),
        })
        .await
        .expect("seed charge")
        .into_inner()
        .payment_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_one_of_three_instances_fails_no_idempotent_call() {
    let mut mesh = PaymentsMesh::start(3);
    let client = mesh.client(ClientOptions::default());
    wait_endpoints(&client, "payments", 3).await;
    let mut payments = PaymentsClient::new(client.channel("payments"));
    let payment_id = charge_one(&mut payments).await;

    let victim = mesh.instances.remove(0);
    let (kill_now, killed) = tokio::sync::oneshot::channel::<()>();
    let trigger = Arc::new(Mutex::new(Some(kill_now)));
    let killer = tokio::task::spawn_blocking(move || {
        let mut victim = victim;
        let _ = killed.blocking_recv();
        victim.process.child.kill();
        victim
    });

    let outcomes = drive(4000, 8, move |i| {
        if i == 1000 {
            if let Some(kill_now) = trigger.lock().unwrap().take() {
                let _ = kill_now.send(());
            }
        }
        common::get_payment(&payments, payment_id.clone())
    })
    .await;
    let _victim = killer.await.expect("killer");
    let counts = client.metrics("payments").snapshot();
    eprintln!("outcomes: {outcomes:?}; client counters: {counts:?}");
    assert_eq!(outcomes.ok, 4000, "{outcomes:?}");
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");
    wait_passing(&mesh.agent, "payments", 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_only_instance_fails_fast_and_recovers() {
    let mut mesh = PaymentsMesh::start(1);
    let options = ClientOptions {
        fail_fast_after: Duration::from_secs(1),
        ..ClientOptions::default()
    };
    let client = mesh.client(options);
    wait_endpoints(&client, "payments", 1).await;
    let mut payments = PaymentsClient::new(client.channel("payments"));
    let payment_id = charge_one(&mut payments).await;

    mesh.instances[0].process.child.kill();

    // Every call ends (never hangs) with UNAVAILABLE; once Consul has marked
    // the instance critical the message names the cause.
    let started = Instant::now();
    let mut last_message = String::new();
    while !last_message.contains("no healthy instance of payments") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "last error: {last_message}"
        );
        let call = payments.get_payment(GetPaymentRequest {
            payment_id: payment_id.clone(),
        });
        let status = tokio::time::timeout(Duration::from_secs(15), call)
            .await
            .expect("a call with no healthy instance must not hang")
            .expect_err("no instance is alive");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        last_message = status.message().to_owned();
    }
    eprintln!("fail-fast message: {last_message}");

    mesh.add_instance(Vec::new());
    wait_passing(&mesh.agent, "payments", 1);
    let recovered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let call = payments.get_payment(GetPaymentRequest {
                payment_id: payment_id.clone(),
            });
            if call.await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        recovered.is_ok(),
        "calls did not succeed again after a new instance passed"
    );
}
