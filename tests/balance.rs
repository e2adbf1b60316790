//! p2c over PeakEWMA through Consul: load spreads over healthy instances,
//! and a slow instance gets clearly less of it.

mod common;

use common::{drive, wait_endpoints, PaymentsMesh};
use mesh::{
    client::ClientOptions,
    proto::payments::v1::{payments_client::PaymentsClient, GetPaymentRequest},
};

const CALLS: usize = 3000;

async fn get_payment_load(mesh: &PaymentsMesh) -> common::Outcomes {
    let client = mesh.client(ClientOptions::default());
    wait_endpoints(&client, "payments", mesh.instances.len()).await;
    let payments = PaymentsClient::new(client.channel("payments"));
    drive(CALLS, 16, move |i| {
        let mut payments = payments.clone();
        async move {
            // An unknown id: the answer (NOT_FOUND) is the same on every instance.
            match payments
                .get_payment(GetPaymentRequest {
                    payment_id: format!("pay_unknown_{i}"),
                })
                .await
            {
                Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
                Err(status) => Err(status),
                Ok(_) => Err(tonic::Status::internal("an unknown payment was found")),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_each_take_a_fair_share() {
    let mesh = PaymentsMesh::start(3);
    let outcomes = get_payment_load(&mesh).await;
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");

    let served: Vec<f64> = mesh
        .instances
        .iter()
        .map(|i| i.handled("GetPayment"))
        .collect();
    let total: f64 = served.iter().sum();
    assert_eq!(total as usize, CALLS, "servers counted {served:?}");
    for (index, count) in served.iter().enumerate() {
        let share = count / total;
        eprintln!("instance {index}: {count} calls ({:.1} %)", share * 100.0);
        assert!(
            share >= 0.15,
            "instance {index} took only {:.1} % ({served:?})",
            share * 100.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_instance_gets_clearly_less_traffic() {
    let slow = vec!["--inject-latency".to_owned(), "40".to_owned()];
    let mesh = PaymentsMesh::start_with(&[Vec::new(), Vec::new(), slow]);
    let outcomes = get_payment_load(&mesh).await;
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");

    let served: Vec<f64> = mesh
        .instances
        .iter()
        .map(|i| i.handled("GetPayment"))
        .collect();
    let total: f64 = served.iter().sum();
    let slow_share = served[2] / total;
    let fast_share = (served[0] + served[1]) / 2.0 / total;
    eprintln!(
        "fast instances: {:.1} % each on average; slow instance: {:.1} %",
        fast_share * 100.0,
        slow_share * 100.0
    );
    assert!(
        slow_share * 3.0 < fast_share,
        "the slow instance took {:.1} % vs {:.1} % for a fast one ({served:?})",
        slow_share * 100.0,
        fast_share * 100.0
    );
}
