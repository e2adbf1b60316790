//! `orders.PlaceOrder` through the mesh: orders resolves users, inventory and
//! payments in Consul and calls them through the mesh client. With one of two
//! payments instances SIGKILLed in the middle of 300 sequential orders, every
//! order is confirmed exactly once (a Charge whose outcome is unknown is sent
//! again, same key, to the surviving instance): stock moves by exactly what
//! was ordered, no reservation is left behind, and each order has its own
//! payment.

mod common;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use mesh::{
    client::{ClientOptions, MeshClient},
    proto::{
        inventory::v1::{inventory_client::InventoryClient, AddStockRequest, GetItemRequest},
        orders::v1::{orders_client::OrdersClient, OrderLine, OrderStatus, PlaceOrderRequest},
        payments::v1::{payments_client::PaymentsClient, GetPaymentRequest, PaymentStatus},
        users::v1::{users_client::UsersClient, CreateUserRequest},
    },
};
use testkit::{ConsulAgent, ServiceOptions, ServiceProcess};

const ORDERS: usize = 300;

fn start(agent: &ConsulAgent, name: &str, data_dir: &std::path::Path) -> ServiceProcess {
    ServiceProcess::start(
        name,
        ServiceOptions {
            consul: Some(agent.http_addr()),
            data_dir: Some(data_dir.to_owned()),
            args: vec!["--check-interval".into(), "500".into()],
            ..ServiceOptions::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_sequential_orders_survive_the_sigkill_of_a_payments_instance() {
    let agent = ConsulAgent::start();
    let data = tempfile::tempdir().expect("temp dir");
    let _users = start(&agent, "users", data.path());
    let _inventory = start(&agent, "inventory", data.path());
    let mut payments = vec![
        start(&agent, "payments", data.path()),
        start(&agent, "payments", data.path()),
    ];
    let _orders = start(&agent, "orders", data.path());
    for (service, count) in [
        ("users", 1),
        ("inventory", 1),
        ("payments", 2),
        ("orders", 1),
    ] {
        agent.wait_passing(service, count, Duration::from_secs(30));
    }

    let mesh = MeshClient::new(
        discovery::ConsulConfig::new(&agent.http_addr(), None).expect("consul"),
        ClientOptions::default(),
    );
    let user_id = UsersClient::new(mesh.channel("users"))
        .create_user(CreateUserRequest {
            email: "buyer@example.com".into(),
            display_name: "Buyer".into(),
        })
        .await
        .expect("create user")
        .into_inner()
        .user_id;
    let mut inventory = InventoryClient::new(mesh.channel("inventory"));
    inventory
        .add_stock(AddStockRequest {
            sku: "WIDGET-1".into(),
            quantity: 1000,
            unit_price_cents: 250,
            currency: "EUR".into(),
        })
        .await
        .expect("add stock");

    let victim = payments.remove(0);
    let (kill_now, killed) = tokio::sync::oneshot::channel::<()>();
    let trigger = Arc::new(Mutex::new(Some(kill_now)));
    let killer = tokio::task::spawn_blocking(move || {
        let mut victim = victim;
        let _ = killed.blocking_recv();
        victim.child.kill();
        victim
    });

    let orders = OrdersClient::new(mesh.channel("orders"));
    // One at a time: the kill lands inside some order's Charge.
    let outcomes = common::drive(ORDERS, 1, {
        let user_id = user_id.clone();
        move |i| {
            if i == ORDERS / 2 {
                if let Some(kill_now) = trigger.lock().unwrap().take() {
                    let _ = kill_now.send(());
                }
            }
            let mut orders = orders.clone();
            let request = PlaceOrderRequest {
                request_id: format!("order-{i}"),
                user_id: user_id.clone(),
                items: vec![OrderLine {
                    sku: "WIDGET-1".into(),
                    quantity: 2,
                    unit_price_cents: 0,
                }],
                currency: "EUR".into(),
            };
            let call: std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(), tonic::Status>> + Send>,
            > = Box::pin(async move {
                let order = orders.place_order(request).await?.into_inner();
                if order.status() == OrderStatus::Confirmed {
                    Ok(())
                } else {
                    Err(tonic::Status::internal(format!(
                        "order not confirmed: {order:?}"
                    )))
                }
            });
            call
        }
    })
    .await;
    let _victim = killer.await.expect("killer");
    eprintln!(
        "orders: {outcomes:?}; client to orders: {:?}",
        mesh.metrics("orders").snapshot()
    );
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");
    assert_eq!(outcomes.ok as usize, ORDERS);

    // Replays return the same orders; every order has its own captured payment.
    let mut orders = OrdersClient::new(mesh.channel("orders"));
    let mut payments_client = PaymentsClient::new(mesh.channel("payments"));
    let mut payment_ids = HashSet::new();
    for i in 0..ORDERS {
        let order = orders
            .place_order(PlaceOrderRequest {
                request_id: format!("order-{i}"),
                user_id: user_id.clone(),
                items: vec![OrderLine {
                    sku: "WIDGET-1".into(),
                    quantity: 2,
                    unit_price_cents: 0,
                }],
                currency: "EUR".into(),
            })
            .await
            .expect("replay")
            .into_inner();
        assert_eq!(order.status(), OrderStatus::Confirmed);
        assert_eq!(order.total_cents, 500);
        let payment = payments_client
            .get_payment(GetPaymentRequest {
                payment_id: order.payment_id.clone(),
            })
            .await
            .expect("the order's payment exists")
            .into_inner();
        assert_eq!(payment.status(), PaymentStatus::Captured);
        assert_eq!(payment.amount_cents, 500);
        payment_ids.insert(order.payment_id);
    }
    assert_eq!(payment_ids.len(), ORDERS, "one payment per order");

    let item = inventory
        .get_item(GetItemRequest {
            sku: "WIDGET-1".into(),
        })
        .await
        .expect("get item")
        .into_inner();
    assert_eq!(
        item.available,
        1000 - 2 * ORDERS as i64,
        "stock moved by exactly what was ordered"
    );
    assert_eq!(item.reserved, 0, "no reservation left behind");
}
