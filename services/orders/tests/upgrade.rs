//! Upgrades: databases made by older schemas, opened by today's binaries.

mod common;

use std::{path::Path, time::Duration};

use common::{orders_client, start_orders_with, Upstreams};
use mesh::proto::{
    orders::v1::{CancelOrderRequest, OrderStatus},
    payments::v1::{ChargeRequest, GetPaymentRequest, PaymentStatus},
};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use testkit::ServiceOptions;

/// A SQLite database `file` in `dir` holding only migration
/// `0001_<name>.sql` of `service` (as the first release made it), plus
/// `statements` run after it.
async fn old_database(dir: &Path, service: &str, migration: &str, statements: &[String]) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(service)
        .join("migrations")
        .join(migration);
    let only_first = tempfile::tempdir().expect("temp dir");
    std::fs::copy(&source, only_first.path().join(migration))
        .unwrap_or_else(|error| panic!("copy {}: {error}", source.display()));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.join(format!("{service}.db")))
                .create_if_missing(true),
        )
        .await
        .expect("create the old database");
    sqlx::migrate::Migrator::new(only_first.path())
        .await
        .expect("read the first migration")
        .run(&pool)
        .await
        .expect("apply the first migration");
    for statement in statements {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    pool.close().await;
}

/// Hardening finding 5: inventory's migration 0002 added `expires_at = 0`
/// ("never expires") and `committed = 0` to rows made before it, so a
/// reservation leaked before the upgrade held its stock forever, and
/// cancelling an order confirmed before the upgrade failed after its refund
/// (its units were not counted as sold, so they could not be restocked).
/// Here both databases are made by the first schema, with that data in
/// them, then served by today's binaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_5_data_from_before_inventory_migration_0002_upgrades_correctly() {
    let now = mesh::storage::now_unix_ms();
    let an_hour_ago = now - 3_600_000;
    // The pre-upgrade order: 3 units of OLD-1 sold, payment captured.
    let request_id = "before-the-upgrade";
    let reservation = orders::domain::reservation_id(request_id, 0);
    let charge_key = orders::domain::charge_key(request_id);

    // Inventory, first schema: 10 units ever added; 3 sold to the order
    // (leaving `reserved`, as the first release did), 2 held by a
    // reservation leaked long ago, 5 on the shelf.
    let inventory_dir = tempfile::tempdir().expect("temp dir");
    old_database(
        inventory_dir.path(),
        "inventory",
        "0001_inventory.sql",
        &[
            format!("INSERT INTO items VALUES ('OLD-1', 5, 2, 300, {an_hour_ago})"),
            format!("INSERT INTO reservations VALUES ('{reservation}', 'COMMITTED', 900, {an_hour_ago}, {an_hour_ago})"),
            format!("INSERT INTO reservation_lines VALUES ('{reservation}', 0, 'OLD-1', 3, 300)"),
            format!("INSERT INTO reservations VALUES ('leaked-1', 'RESERVED', 600, {an_hour_ago}, {an_hour_ago})"),
            "INSERT INTO reservation_lines VALUES ('leaked-1', 0, 'OLD-1', 2, 300)".to_owned(),
        ],
    )
    .await;
    let shop = Upstreams::start_with_inventory(&[], inventory_dir);
    let user = shop.user("early").await;
    let payment = shop
        .payments_client()
        .await
        .charge(ChargeRequest {
            idempotency_key: charge_key,
            user_id: user.clone(),
            amount_cents: 900,
            currency: "EUR".into(),
        })
        .await
        .expect("the pre-upgrade order's payment")
        .into_inner();

    // Orders, first schema, with the confirmed order.
    let orders_dir = tempfile::tempdir().expect("temp dir");
    old_database(
        orders_dir.path(),
        "orders",
        "0001_orders.sql",
        &[
            format!(
                "INSERT INTO orders VALUES ('ord_old', '{request_id}', '{user}', 'EUR', 'CONFIRMED', 900, '{}', '', {an_hour_ago}, {an_hour_ago}, 0, 1, '', 0)",
                payment.payment_id
            ),
            "INSERT INTO order_lines VALUES ('ord_old', 0, 'OLD-1', 3, 300)".to_owned(),
        ],
    )
    .await;
    let orders = start_orders_with(
        &shop,
        &[],
        ServiceOptions {
            data_dir: Some(orders_dir.path().to_owned()),
            ..ServiceOptions::default()
        },
    );

    // The leaked reservation expires (inventory sweeps every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let item = loop {
        let item = shop.item("OLD-1").await;
        if item.reserved == 0 || std::time::Instant::now() > deadline {
            break item;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (item.available, item.reserved, item.committed),
        (7, 0, 3),
        "the leaked reservation is released and the sold units are counted"
    );

    // Cancelling the pre-upgrade order refunds it and restocks its units.
    let mut request = tonic::Request::new(CancelOrderRequest {
        order_id: "ord_old".into(),
    });
    request.set_timeout(Duration::from_secs(10));
    let cancelled = orders_client(&orders)
        .await
        .cancel_order(request)
        .await
        .expect("the pre-upgrade order is cancelled")
        .into_inner();
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    let refunded = shop
        .payments_client()
        .await
        .get_payment(GetPaymentRequest {
            payment_id: payment.payment_id,
        })
        .await
        .expect("the payment")
        .into_inner();
    assert_eq!(refunded.status(), PaymentStatus::Refunded);
    let item = shop.item("OLD-1").await;
    assert_eq!((item.available, item.reserved, item.committed), (10, 0, 0));
}
