//! Two real `payments` processes sharing one SQLite file: concurrent charges
//! with one idempotency key create exactly one payment.

use std::collections::HashSet;

use mesh::proto::payments::v1::{
    payments_client::PaymentsClient, ChargeRequest, GetPaymentRequest, PaymentStatus,
};
use testkit::{ServiceOptions, ServiceProcess};
use tonic::Code;

fn shared(dir: &std::path::Path) -> ServiceOptions {
    ServiceOptions {
        data_dir: Some(dir.to_owned()),
        ..ServiceOptions::default()
    }
}

async fn count_rows(dir: &std::path::Path, key: &str) -> i64 {
    let pool = mesh::storage::open("payments", None, dir, &payments::MIGRATOR)
        .await
        .expect("open the shared payments database");
    let count =
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM payments WHERE idempotency_key = $1")
            .bind(key)
            .fetch_one(&pool)
            .await
            .expect("count payments");
    pool.close().await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_charges_over_two_processes_make_one_payment() {
    let dir = tempfile::tempdir().unwrap();
    let a = ServiceProcess::start("payments", shared(dir.path()));
    let b = ServiceProcess::start("payments", shared(dir.path()));
    let clients = [
        PaymentsClient::connect(format!("http://{}", a.addr()))
            .await
            .unwrap(),
        PaymentsClient::connect(format!("http://{}", b.addr()))
            .await
            .unwrap(),
    ];
    let request = ChargeRequest {
        idempotency_key: "order-42".into(),
        user_id: "u_1".into(),
        amount_cents: 4200,
        currency: "EUR".into(),
    };
    let calls = (0..10).map(|i| {
        let mut client = clients[i % 2].clone();
        let request = request.clone();
        tokio::spawn(async move { client.charge(request).await.map(|r| r.into_inner()) })
    });
    let mut ids = HashSet::new();
    let mut created_at = HashSet::new();
    for call in futures::future::join_all(calls).await {
        let payment = call.unwrap().expect("every concurrent charge succeeds");
        assert_eq!(payment.status(), PaymentStatus::Captured);
        ids.insert(payment.payment_id);
        created_at.insert(payment.created_at_unix_ms);
    }
    assert_eq!(ids.len(), 1, "one payment for one key: {ids:?}");
    assert_eq!(created_at.len(), 1);
    assert_eq!(count_rows(dir.path(), "order-42").await, 1);

    // Either process finds it.
    let id = ids.into_iter().next().unwrap();
    for mut client in clients.clone() {
        let got = client
            .get_payment(GetPaymentRequest {
                payment_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.payment_id, id);
    }

    // And neither accepts the key for another amount.
    let mut other = request.clone();
    other.amount_cents = 1;
    for mut client in clients {
        let status = client.charge(other.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "idempotency_key order-42 was already used with different arguments"
        );
    }
}
