//! The PlaceOrder saga against REAL users, inventory and payments processes
//! and the real `orders` binary: what a customer sees, and what is left in
//! the other services afterwards (stock, reservations, charges).

mod common;

use std::collections::HashSet;

use common::{order, orders_client, start_orders, Upstreams};
use mesh::proto::{
    orders::v1::{
        orders_client::OrdersClient, CancelOrderRequest, GetOrderRequest, ListOrdersRequest,
        OrderLine, OrderStatus,
    },
    payments::v1::{GetPaymentRequest, PaymentStatus},
};
use tonic::{transport::Channel, Code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_order_takes_the_stock_and_captures_one_payment() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    let user = shop.user("ada").await;
    shop.stock("APPLE-1", 10, 250).await;
    shop.stock("PEAR-2", 5, 1000).await;
    let mut client = orders_client(&orders).await;

    let placed = client
        .place_order(order("r-1", &user, &[("APPLE-1", 2), ("PEAR-2", 1)]))
        .await
        .expect("the order is placed")
        .into_inner();
    assert_eq!(placed.status(), OrderStatus::Confirmed);
    assert!(placed.order_id.starts_with("ord_"), "{placed:?}");
    assert_eq!(placed.total_cents, 2 * 250 + 1000);
    assert_eq!(placed.currency, "EUR");
    assert_eq!(placed.items[0].unit_price_cents, 250);
    assert_eq!(placed.items[1].unit_price_cents, 1000);
    assert_eq!(placed.rejection_reason, "");

    let apple = shop.item("APPLE-1").await;
    assert_eq!((apple.available, apple.reserved), (8, 0));
    let pear = shop.item("PEAR-2").await;
    assert_eq!((pear.available, pear.reserved), (4, 0));

    let payment = shop
        .payments_client()
        .await
        .get_payment(GetPaymentRequest {
            payment_id: placed.payment_id.clone(),
        })
        .await
        .expect("the payment exists")
        .into_inner();
    assert_eq!(payment.status(), PaymentStatus::Captured);
    assert_eq!(payment.amount_cents, 1500);
    assert_eq!(payment.currency, "EUR");
    assert_eq!(payment.user_id, user);
    assert_eq!(shop.payments_of(&user).await, 1);

    let got = client
        .get_order(GetOrderRequest {
            order_id: placed.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, placed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_request_returns_the_same_order_and_charges_once() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    let user = shop.user("grace").await;
    shop.stock("BOLT-7", 100, 30).await;
    let client = orders_client(&orders).await;

    // Five concurrent first attempts, then two sequential replays.
    let attempts = (0..5).map(|_| {
        let mut client = client.clone();
        let request = order("same-request", &user, &[("BOLT-7", 3)]);
        tokio::spawn(async move { client.place_order(request).await })
    });
    let mut ids = HashSet::new();
    for attempt in futures::future::join_all(attempts).await {
        let placed = attempt
            .unwrap()
            .expect("every attempt answers the order")
            .into_inner();
        assert_eq!(placed.status(), OrderStatus::Confirmed);
        ids.insert((placed.order_id, placed.payment_id));
    }
    for _ in 0..2 {
        let placed = client
            .clone()
            .place_order(order("same-request", &user, &[("BOLT-7", 3)]))
            .await
            .unwrap()
            .into_inner();
        ids.insert((placed.order_id, placed.payment_id));
    }
    assert_eq!(ids.len(), 1, "one order, one payment: {ids:?}");
    assert_eq!(shop.item("BOLT-7").await.available, 97, "stock taken once");
    assert_eq!(shop.payments_of(&user).await, 1, "charged once");

    // The same request_id for another order is refused.
    let status = client
        .clone()
        .place_order(order("same-request", &user, &[("BOLT-7", 4)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "request_id same-request was already used for a different order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amount_over_the_limit_is_declined_and_the_stock_is_back() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    let user = shop.user("linus").await;
    shop.stock("TV-1", 3, 150_000).await;
    let mut client = orders_client(&orders).await;

    let status = client
        .place_order(order("big", &user, &[("TV-1", 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "order rejected: payment declined: amount 150000 exceeds the limit of 100000"
    );
    let tv = shop.item("TV-1").await;
    assert_eq!(
        (tv.available, tv.reserved),
        (3, 0),
        "no dangling reservation"
    );

    let listed = client
        .list_orders(ListOrdersRequest {
            user_id: user.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 1);
    let rejected = &listed.orders[0];
    assert_eq!(rejected.status(), OrderStatus::Rejected);
    assert_eq!(
        rejected.rejection_reason,
        "payment declined: amount 150000 exceeds the limit of 100000"
    );
    assert_eq!(rejected.payment_id, "");

    // A replay answers the same rejection and changes nothing.
    let again = client
        .place_order(order("big", &user, &[("TV-1", 1)]))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(again.message(), status.message());
    assert_eq!(shop.item("TV-1").await.reserved, 0);
    assert_eq!(shop.payments_of(&user).await, 1, "one declined charge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_is_not_found_and_nothing_is_recorded() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    shop.stock("CUP-1", 5, 100).await;
    let mut client = orders_client(&orders).await;

    let status = client
        .place_order(order("ghost-order", "u_nobody", &[("CUP-1", 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "user u_nobody not found");

    let listed = client
        .list_orders(ListOrdersRequest {
            user_id: "u_nobody".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.orders.is_empty(), "{listed:?}");
    let cup = shop.item("CUP-1").await;
    assert_eq!((cup.available, cup.reserved), (5, 0));
    assert_eq!(shop.payments_of("u_nobody").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_is_rejected_naming_the_sku() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    let user = shop.user("barbara").await;
    shop.stock("LAMP-3", 2, 4000).await;
    shop.stock("BULB-4", 50, 200).await;
    let mut client = orders_client(&orders).await;

    let status = client
        .place_order(order("too-many", &user, &[("BULB-4", 1), ("LAMP-3", 5)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .starts_with("order rejected: insufficient stock: "),
        "{status:?}"
    );
    assert!(status.message().contains("LAMP-3"), "{status:?}");
    assert!(!status.message().contains("BULB-4"), "{status:?}");

    for sku in ["LAMP-3", "BULB-4"] {
        assert_eq!(shop.item(sku).await.reserved, 0, "{sku}");
    }
    assert_eq!(shop.item("LAMP-3").await.available, 2);
    assert_eq!(shop.payments_of(&user).await, 0, "nothing was charged");
    let listed = client
        .list_orders(ListOrdersRequest {
            user_id: user,
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders[0].status(), OrderStatus::Rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_payments_killed_the_order_stays_pending_and_recovery_confirms_it_once() {
    let mut shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &["--recovery-interval", "200"]);
    let user = shop.user("edsger").await;
    shop.stock("DESK-9", 10, 12_000).await;
    let mut client = orders_client(&orders).await;

    // One order first, so orders has a live connection to payments to lose.
    client
        .place_order(order("warm-up", &user, &[("DESK-9", 1)]))
        .await
        .expect("the first order is placed");
    assert_eq!(shop.item("DESK-9").await.available, 9);

    shop.payments.child.kill();
    let status = client
        .place_order(order("while-down", &user, &[("DESK-9", 2)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("will be finished automatically"),
        "{status:?}"
    );
    // The order is recorded at CHARGE, the stock held for it.
    let pending = pending_order(&mut client, &user, "while-down").await;
    assert_eq!(pending.status(), OrderStatus::Pending);
    let desk = shop.item("DESK-9").await;
    assert_eq!((desk.available, desk.reserved), (7, 2));

    // Nobody repeats the request: payments comes back, the recovery loop
    // finishes the order.
    shop.restart_payments(None);
    let confirmed = wait_final(&mut client, &pending.order_id).await;
    assert_eq!(confirmed.status(), OrderStatus::Confirmed);
    assert_eq!(confirmed.total_cents, 24_000);
    let desk = shop.item("DESK-9").await;
    assert_eq!((desk.available, desk.reserved), (7, 0));
    assert_eq!(
        shop.payments_of(&user).await,
        2,
        "warm-up + exactly one charge"
    );
    // A late repeat answers the same order.
    let replay = client
        .place_order(order("while-down", &user, &[("DESK-9", 2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.order_id, pending.order_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_with_an_unknown_outcome_keeps_the_stock_until_recovery_settles_it() {
    // payments answers only after 3 s; orders gives each call 500 ms.
    let mut shop = Upstreams::start(&["--inject-latency", "3000"]);
    let orders = start_orders(
        &shop,
        &["--upstream-timeout", "500", "--recovery-interval", "200"],
    );
    let user = shop.user("barbara").await;
    shop.stock("CHAIR-5", 4, 5_000).await;
    let mut client = orders_client(&orders).await;

    let status = client
        .place_order(order("slow", &user, &[("CHAIR-5", 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The charge may have happened: the stock stays reserved, the order pending.
    let chair = shop.item("CHAIR-5").await;
    assert_eq!((chair.available, chair.reserved), (3, 1));

    shop.restart_payments(Some(&[]));
    let pending = pending_order(&mut client, &user, "slow").await;
    let confirmed = wait_final(&mut client, &pending.order_id).await;
    assert_eq!(confirmed.status(), OrderStatus::Confirmed);
    let chair = shop.item("CHAIR-5").await;
    assert_eq!((chair.available, chair.reserved), (3, 0));
    assert_eq!(shop.payments_of(&user).await, 1);
}

/// The user's order placed with `request_id`, as ListOrders shows it.
async fn pending_order(
    client: &mut OrdersClient<Channel>,
    user: &str,
    request_id: &str,
) -> mesh::proto::orders::v1::Order {
    client
        .list_orders(ListOrdersRequest {
            user_id: user.to_owned(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .orders
        .into_iter()
        .find(|o| o.request_id == request_id)
        .expect("the order is recorded")
}

/// Polls GetOrder until the order is no longer PENDING/CANCELLING (bounded).
async fn wait_final(
    client: &mut OrdersClient<Channel>,
    order_id: &str,
) -> mesh::proto::orders::v1::Order {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let order = client
            .get_order(GetOrderRequest {
                order_id: order_id.to_owned(),
            })
            .await
            .expect("get order")
            .into_inner();
        if !matches!(
            order.status(),
            OrderStatus::Pending | OrderStatus::Cancelling
        ) {
            return order;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "order {order_id} still {:?} after 30 s",
            order.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_refunds_a_confirmed_order_and_refuses_the_others() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    let user = shop.user("margaret").await;
    shop.stock("BOOK-1", 5, 2_000).await;
    shop.stock("YACHT-1", 1, 900_000).await;
    let mut client = orders_client(&orders).await;

    let placed = client
        .place_order(order("book", &user, &[("BOOK-1", 1)]))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        let cancelled = client
            .cancel_order(CancelOrderRequest {
                order_id: placed.order_id.clone(),
            })
            .await
            .expect("cancel (and its repeat) succeed")
            .into_inner();
        assert_eq!(cancelled.status(), OrderStatus::Cancelled);
        assert_eq!(cancelled.payment_id, placed.payment_id);
    }
    let payment = shop
        .payments_client()
        .await
        .get_payment(GetPaymentRequest {
            payment_id: placed.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payment.status(), PaymentStatus::Refunded);
    let book = shop.item("BOOK-1").await;
    assert_eq!(
        (book.available, book.reserved, book.committed),
        (5, 0, 0),
        "the cancelled unit is back in stock"
    );

    // A rejected order cannot be cancelled.
    client
        .place_order(order("yacht", &user, &[("YACHT-1", 1)]))
        .await
        .unwrap_err();
    let rejected = client
        .list_orders(ListOrdersRequest {
            user_id: user.clone(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .orders
        .into_iter()
        .find(|o| o.request_id == "yacht")
        .expect("the rejected order is listed");
    assert_eq!(rejected.status(), OrderStatus::Rejected);
    let status = client
        .cancel_order(CancelOrderRequest {
            order_id: rejected.order_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!(
            "order {} is REJECTED and cannot be cancelled; only confirmed orders can",
            rejected.order_id
        )
    );

    let status = client
        .cancel_order(CancelOrderRequest {
            order_id: "ord_unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "order ord_unknown not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_are_in_the_sellers_currency_and_a_mismatch_is_invalid() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    let user = shop.user("grace").await;
    shop.stock_in("CHEESE", 10, 700, "CHF").await;
    shop.stock("BREAD", 10, 300).await;
    let mut client = orders_client(&orders).await;

    // No currency in the request: the seller's.
    let placed = client
        .place_order(order("cheese", &user, &[("CHEESE", 2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (placed.currency.as_str(), placed.total_cents),
        ("CHF", 1400)
    );
    let payment = shop
        .payments_client()
        .await
        .get_payment(GetPaymentRequest {
            payment_id: placed.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (payment.currency.as_str(), payment.amount_cents),
        ("CHF", 1400)
    );

    // The buyer cannot pick another currency, nor mix two.
    let mut in_euros = order("cheese-eur", &user, &[("CHEESE", 1)]);
    in_euros.currency = "EUR".into();
    for (request, expected) in [
        (in_euros, "the items are priced in CHF, not in EUR"),
        (
            order("mixed", &user, &[("CHEESE", 1), ("BREAD", 1)]),
            "the items are priced in different currencies (CHF, EUR)",
        ),
    ] {
        let status = client.place_order(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(expected), "{status:?}");
    }
    for sku in ["CHEESE", "BREAD"] {
        assert_eq!(shop.item(sku).await.reserved, 0, "{sku}");
    }
    assert_eq!(
        shop.payments_of(&user).await,
        1,
        "only the first order was charged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_over_100_lines_is_invalid_and_nothing_is_stored() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    let user = shop.user("alan").await;
    let mut client = orders_client(&orders).await;

    let mut request = order("huge", &user, &[]);
    request.items = (0..10_000)
        .map(|i| OrderLine {
            sku: format!("SKU-{i}"),
            quantity: 1,
            unit_price_cents: 0,
        })
        .collect();
    let status = client.place_order(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "invalid PlaceOrderRequest: items: must have at most 100 lines (got 10000); split the order"
    );
    let listed = client
        .list_orders(ListOrdersRequest {
            user_id: user,
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.orders.is_empty(), "nothing stored: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_million_line_order_is_refused_cheaply() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    let user = shop.user("kurt").await;
    let mut client = orders_client(&orders)
        .await
        .max_encoding_message_size(8 * 1024 * 1024);
    let before = peak_rss_kib(orders.child.pid());

    let mut request = order("two-million", &user, &[]);
    request.items = vec![OrderLine::default(); 2_000_000];
    let started = std::time::Instant::now();
    let status = client.place_order(request).await.unwrap_err();
    let elapsed = started.elapsed();
    let after = peak_rss_kib(orders.child.pid());
    eprintln!(
        "2M-line PlaceOrder: {:?} in {elapsed:?}; orders peak RSS (VmHWM) {before} KiB before, {after} KiB after",
        status.code()
    );
    // Refused before decoding (the size limit, RESOURCE_EXHAUSTED): larger than any valid order.
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("message length too large"),
        "{status:?}"
    );
    // Decoding 2 M lines would take well over 100 MiB; refusing takes next to nothing.
    assert!(
        after < before + 32 * 1024,
        "orders' peak RSS grew from {before} KiB to {after} KiB"
    );
    // Still serving.
    client
        .list_orders(ListOrdersRequest {
            user_id: user,
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("orders still answers");
}

/// A process's peak resident set size (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}
