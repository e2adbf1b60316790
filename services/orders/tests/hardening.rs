//! Regression tests of the saga's hardening findings (a hostile request, a
//! poisoned recovery queue, a lost orders database), each against the real
//! binaries: what a caller sees and what the other services hold afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{order, orders_client, start_orders, start_orders_with, Upstreams};
use futures::StreamExt;
use mesh::proto::{
    inventory::v1::{LineItem, ReserveRequest},
    orders::v1::{orders_client::OrdersClient, GetOrderRequest, ListOrdersRequest, OrderStatus},
    payments::v1::{GetPaymentRequest, PaymentStatus},
};
use testkit::ServiceOptions;
use tonic::{transport::Channel, Code};

/// `count` distinct unknown SKUs of 64 characters (inventory's longest).
fn long_unknown_skus(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("{i:03}-{}", "UNKNOWN".repeat(9))[..64].to_owned())
        .collect()
}

/// Hardening finding 1: a PlaceOrder of 40 or more unknown 64-character
/// SKUs made inventory answer one message line and one status detail per
/// line (~24 KB of trailers for 100 lines); the client's HTTP/2 header-list
/// limit reset the stream, orders saw INTERNAL (an unknown outcome) and the
/// order stayed PENDING at RESERVE forever. Now inventory's answer is
/// bounded and the order ends REJECTED within the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_an_order_of_many_long_unknown_skus_is_rejected_promptly() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    let user = shop.user("ida").await;
    let mut client = orders_client(&orders).await;

    for lines in [40, 100] {
        let skus = long_unknown_skus(lines);
        let items: Vec<(&str, i64)> = skus.iter().map(|sku| (sku.as_str(), 1)).collect();
        let request_id = format!("unknown-{lines}");
        let mut request = tonic::Request::new(order(&request_id, &user, &items));
        request.set_timeout(Duration::from_secs(10));
        let status = client.place_order(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{lines} lines: {status:?}"
        );
        assert!(
            status
                .message()
                .starts_with("order rejected: insufficient stock: "),
            "{}",
            status.message()
        );
        assert!(
            status.message().len() <= 2048,
            "{lines} lines: a {}-byte message",
            status.message().len()
        );
        let placed = find_order(&mut client, &user, &request_id).await;
        assert_eq!(placed.status(), OrderStatus::Rejected, "{placed:?}");
        assert!(placed.rejection_reason.len() <= 2048);
    }

    // Inventory's own answer fits a client with HTTP/2's usual 16 KiB
    // header-list limit (tonic's default channel), message and details bounded.
    let skus = long_unknown_skus(100);
    let status = shop
        .inventory_client()
        .await
        .reserve(ReserveRequest {
            reservation_id: "direct-100".into(),
            items: skus
                .iter()
                .map(|sku| LineItem {
                    sku: sku.clone(),
                    quantity: 1,
                })
                .collect(),
            ttl_ms: 0,
            currency: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().len() <= 2048, "{}", status.message().len());
    assert!(status.message().contains("more"), "{}", status.message());
    assert!(status.details().len() <= 8192, "{}", status.details().len());
}

/// Hardening finding 2: recovery took `LIMIT 256` unfinished orders ordered
/// by `lease_until, updated_at`, and a failed run reset `lease_until` to 0
/// without touching `updated_at`: 256 orders that can never finish came
/// first in every round, and an order cut by a payments outage stayed
/// PENDING long after payments returned. Here 260 orders are poisoned (their
/// reservations vanish from inventory behind the saga's back, so after the
/// charge inventory refuses to commit them: only a person can sort that
/// out); a fresh order cut by a payments outage must still be finished
/// once payments is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_unfinishable_orders_do_not_starve_a_fresh_one() {
    const POISONED: usize = 260;
    let mut shop = Upstreams::start(&[]);
    let orders = start_orders(
        &shop,
        &["--upstream-timeout", "500", "--recovery-interval", "200"],
    );
    let user = shop.user("poison").await;
    shop.stock("POISON-1", 1_000, 10).await;
    shop.stock("FRESH-1", 10, 10).await;
    let client = orders_client(&orders).await;

    // Payments down: every order stops at CHARGE with its stock reserved.
    shop.payments.child.kill();
    futures::stream::iter(0..POISONED)
        .map(|i| {
            let mut client = client.clone();
            let mut request =
                tonic::Request::new(order(&format!("poison-{i}"), &user, &[("POISON-1", 1)]));
            request.set_timeout(Duration::from_secs(1));
            async move { client.place_order(request).await }
        })
        .buffer_unordered(16)
        .for_each(|answer| async move {
            assert!(answer.is_err(), "payments is down: {answer:?}");
        })
        .await;
    assert_eq!(shop.item("POISON-1").await.reserved, POISONED as i64);

    // Behind the saga's back, the reservations vanish: once charged, every
    // one of these orders is refused its Commit (NOT_FOUND).
    let inventory_db = shop.inventory_dir.path().join("inventory.db");
    let tamper = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", inventory_db.display()))
        .await
        .expect("open the inventory database");
    sqlx::query("DELETE FROM reservation_lines")
        .execute(&tamper)
        .await
        .expect("delete the reservation lines");
    let deleted = sqlx::query("DELETE FROM reservations")
        .execute(&tamper)
        .await
        .expect("delete the reservations")
        .rows_affected();
    tamper.close().await;
    assert_eq!(deleted, POISONED as u64);

    // Payments back: every poisoned order is charged, then refused its Commit.
    shop.restart_payments(None);
    let payments_db = shop.payments_dir.path().to_owned();
    let started = Instant::now();
    loop {
        let pool = Upstreams::read_only(&payments_db, "payments.db").await;
        let captured: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE status = 'CAPTURED'")
                .fetch_one(&pool)
                .await
                .expect("count payments");
        pool.close().await;
        if captured == POISONED as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {captured} of {POISONED} poisoned orders were charged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A fresh order cut by a payments outage...
    shop.payments.child.kill();
    let mut request = tonic::Request::new(order("fresh", &user, &[("FRESH-1", 1)]));
    request.set_timeout(Duration::from_secs(1));
    let status = client.clone().place_order(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );
    // ...is finished by recovery once payments is back.
    shop.restart_payments(None);
    let mut client = client;
    let fresh = find_order(&mut client, &user, "fresh").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let current = get(&mut client, &fresh.order_id).await;
        if current.status() != OrderStatus::Pending {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "the fresh order is still PENDING 30 s after payments returned, behind {POISONED} unfinishable ones"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(finished.status(), OrderStatus::Confirmed, "{finished:?}");
}

/// Hardening finding 4: the charge key and the reservation ids depended only
/// on `request_id`. After orders' database was lost, a resent request made a
/// new order with the old order's keys: inventory answered the old
/// reservation (COMMITTED) and the new order stayed PENDING ("reservation …
/// is COMMITTED before any charge"). Keys now come from the order's own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_a_request_resent_after_orders_database_was_lost_is_a_new_order() {
    let shop = Upstreams::start(&[]);
    let orders_dir = tempfile::tempdir().expect("temp dir");
    let options = || ServiceOptions {
        data_dir: Some(orders_dir.path().to_owned()),
        ..ServiceOptions::default()
    };
    let mut orders = start_orders_with(&shop, &[], options());
    let user = shop.user("lost").await;
    shop.stock("LAMP-3", 10, 700).await;

    let first = orders_client(&orders)
        .await
        .place_order(order("resent", &user, &[("LAMP-3", 2)]))
        .await
        .expect("the first order")
        .into_inner();
    assert_eq!(first.status(), OrderStatus::Confirmed);

    // Orders' database is lost; the caller resends the same request.
    orders.child.kill();
    for entry in std::fs::read_dir(orders_dir.path()).expect("read the data folder") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("orders.db"))
        {
            std::fs::remove_file(&path).expect("remove the orders database");
        }
    }
    let orders = start_orders_with(&shop, &[], options());
    let mut request = tonic::Request::new(order("resent", &user, &[("LAMP-3", 2)]));
    request.set_timeout(Duration::from_secs(10));
    let second = orders_client(&orders)
        .await
        .place_order(request)
        .await
        .expect("the resent request is a new order")
        .into_inner();
    assert_eq!(second.status(), OrderStatus::Confirmed, "{second:?}");
    assert_ne!(second.order_id, first.order_id);
    assert_ne!(second.payment_id, first.payment_id);
    let lamp = shop.item("LAMP-3").await;
    assert_eq!((lamp.available, lamp.reserved, lamp.committed), (6, 0, 4));
    assert_eq!(shop.payments_of(&user).await, 2);
    let mut payments = shop.payments_client().await;
    for payment_id in [&first.payment_id, &second.payment_id] {
        let payment = payments
            .get_payment(GetPaymentRequest {
                payment_id: payment_id.clone(),
            })
            .await
            .expect("the payment exists")
            .into_inner();
        assert_eq!(payment.status(), PaymentStatus::Captured);
    }
}

/// The user's order placed with `request_id`, as ListOrders shows it.
async fn find_order(
    client: &mut OrdersClient<Channel>,
    user: &str,
    request_id: &str,
) -> mesh::proto::orders::v1::Order {
    let mut page_token = String::new();
    loop {
        let page = client
            .list_orders(ListOrdersRequest {
                user_id: user.to_owned(),
                page_size: 100,
                page_token: page_token.clone(),
            })
            .await
            .expect("list orders")
            .into_inner();
        if let Some(found) = page.orders.into_iter().find(|o| o.request_id == request_id) {
            return found;
        }
        assert!(
            !page.next_page_token.is_empty(),
            "no order for {request_id}"
        );
        page_token = page.next_page_token;
    }
}

async fn get(client: &mut OrdersClient<Channel>, order_id: &str) -> mesh::proto::orders::v1::Order {
    client
        .get_order(GetOrderRequest {
            order_id: order_id.to_owned(),
        })
        .await
        .expect("get order")
        .into_inner()
}
