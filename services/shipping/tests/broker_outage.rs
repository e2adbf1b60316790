//! The broker stopped for 30 s under load (Redis, the default broker; the
//! campaign stops both brokers for about a second in many runs): placing
//! orders keeps working — their events wait in the outbox — and once the
//! broker is back every confirmed order gets its shipment, with the same
//! invariants as the campaign's.

// The campaign's shop and checks (this binary uses only part of them).
#[allow(dead_code)]
#[path = "event_campaign/check.rs"]
mod check;
#[allow(dead_code)]
#[path = "event_campaign/shop.rs"]
mod shop;

use std::time::{Duration, Instant};

use mesh::proto::orders::v1::{OrderLine, OrderStatus, PlaceOrderRequest};

/// Orders placed per second while the broker is down.
const RATE: u64 = 10;
/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(30);

#[test]
fn placing_orders_works_through_a_30_second_broker_outage_and_every_event_arrives_after() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut shop = shop::Shop::start("redis").await;
        let client = shop.broker_client();
        let place = |shop: &shop::Shop, n: u64| {
            let mut client = shop.clients[(n % 2) as usize].clone();
            let request = PlaceOrderRequest {
                request_id: format!("outage-{n}"),
                user_id: shop.user_id.clone(),
                items: vec![OrderLine {
                    sku: shop::SKUS[(n % 3) as usize].to_owned(),
                    quantity: 1,
                    unit_price_cents: 0,
                }],
                currency: String::new(),
            };
            async move { client.place_order(request).await }
        };
        // Before: events flow.
        for n in 0..5 {
            let order = place(&shop, n).await.expect("PlaceOrder before the outage").into_inner();
            assert_eq!(order.status, OrderStatus::Confirmed as i32);
        }
        shop.broker.kill();
        let down = Instant::now();
        let mut placed = 5;
        let mut ticks = tokio::time::interval(Duration::from_millis(1000 / RATE));
        while down.elapsed() < OUTAGE {
            ticks.tick().await;
            let order = place(&shop, placed)
                .await
                .unwrap_or_else(|status| panic!("PlaceOrder #{placed} failed while the broker was down: {status}"))
                .into_inner();
            assert_eq!(order.status, OrderStatus::Confirmed as i32, "order #{placed}");
            placed += 1;
        }
        let waiting = check::read(&shop.orders_db(), &shop.shipping_db(), &client).await;
        // (The broker is down: reading its backlog fails; the outbox is what matters.)
        assert!(waiting.is_err() || !waiting.unwrap().settled());
        let pending: i64 = {
            sqlx::any::install_default_drivers();
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&shop.orders_db())
                .await
                .unwrap();
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at_unix_ms = 0")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        assert!(
            pending >= (placed - 5 - 5) as i64,
            "the outbox holds what was confirmed during the outage: {pending} of {}",
            placed - 5
        );
        shop.broker.resume();
        let back = Instant::now();
        let state = loop {
            let state = check::read(&shop.orders_db(), &shop.shipping_db(), &client).await;
            if let Ok(state) = state {
                if state.settled() {
                    break state;
                }
            }
            assert!(back.elapsed() < Duration::from_secs(60), "not settled 60 s after the broker came back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some(violation) = state.violation() {
            panic!("{violation}");
        }
        let (orders, applied) = state.totals();
        assert_eq!(orders as u64, placed);
        assert_eq!(applied as u64, placed, "one event per confirmed order, each applied once");
        println!(
            "{placed} orders, {} placed while the broker was down for {OUTAGE:?}; settled {:?} after it came back",
            placed - 5,
            back.elapsed()
        );
    });
}
