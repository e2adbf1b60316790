//! Every service runs on PostgreSQL (one database per service, through
//! `DATABASE_URL`) as well as on the embedded SQLite default: a full order
//! across the four services, and the data survives restarts.

use std::time::Duration;

use mesh::{
    client::{ClientOptions, MeshClient},
    proto::{
        inventory::v1::{inventory_client::InventoryClient, AddStockRequest, GetItemRequest},
        orders::v1::{
            orders_client::OrdersClient, GetOrderRequest, OrderLine, OrderStatus, PlaceOrderRequest,
        },
        users::v1::{
            users_client::UsersClient, CreateUserRequest, GetUserRequest, ListUsersRequest,
        },
    },
};
use testkit::{ConsulAgent, Postgres, RedisServer, ServiceOptions, ServiceProcess};

const SERVICES: [&str; 5] = ["users", "inventory", "payments", "orders", "shipping"];

fn start(
    agent: &ConsulAgent,
    postgres: &Postgres,
    broker: &RedisServer,
    name: &str,
) -> ServiceProcess {
    ServiceProcess::start(
        name,
        ServiceOptions {
            consul: Some(agent.http_addr()),
            args: vec!["--check-interval".into(), "500".into()],
            // orders publishes its events to the broker, shipping consumes them.
            env: vec![
                ("DATABASE_URL".into(), postgres.url(name)),
                ("MESH_BROKER_URL".into(), broker.url()),
            ],
            ..ServiceOptions::default()
        },
    )
}

fn start_all(
    agent: &ConsulAgent,
    postgres: &Postgres,
    broker: &RedisServer,
) -> Vec<ServiceProcess> {
    let processes: Vec<_> = SERVICES
        .iter()
        .map(|name| start(agent, postgres, broker, name))
        .collect();
    for name in SERVICES {
        agent.wait_passing(name, 1, Duration::from_secs(30));
    }
    processes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_runs_on_postgresql_one_database_per_service() {
    let postgres = Postgres::start();
    for name in SERVICES {
        postgres.create_database(name);
    }
    let agent = ConsulAgent::start();
    let broker = RedisServer::start();
    let mut processes = start_all(&agent, &postgres, &broker);

    let mesh = MeshClient::new(
        discovery::ConsulConfig::new(&agent.http_addr(), None).expect("consul"),
        ClientOptions::default(),
    );
    let user_id = UsersClient::new(mesh.channel("users"))
        .create_user(CreateUserRequest {
            email: "pg@example.com".into(),
            display_name: "Post Gres".into(),
        })
        .await
        .expect("create user")
        .into_inner()
        .user_id;
    InventoryClient::new(mesh.channel("inventory"))
        .add_stock(AddStockRequest {
            sku: "PG-1".into(),
            quantity: 10,
            unit_price_cents: 700,
            currency: "EUR".into(),
        })
        .await
        .expect("add stock");
    let order = OrdersClient::new(mesh.channel("orders"))
        .place_order(PlaceOrderRequest {
            request_id: "pg-order-1".into(),
            user_id: user_id.clone(),
            items: vec![OrderLine {
                sku: "PG-1".into(),
                quantity: 3,
                unit_price_cents: 0,
            }],
            currency: String::new(),
        })
        .await
        .expect("place order")
        .into_inner();
    assert_eq!(order.status(), OrderStatus::Confirmed);
    assert_eq!(order.total_cents, 2100);

    // Each service wrote only to its own database.
    for (database, table) in [
        ("users", "users"),
        ("inventory", "items"),
        ("payments", "payments"),
        ("orders", "orders"),
        ("shipping", "shipments"),
    ] {
        // shipping's row comes from the order's event, a moment later.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut output = postgres.psql(database, &format!("SELECT count(*) FROM {table}"));
        while String::from_utf8_lossy(&output.stdout).trim() == "0"
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            output = postgres.psql(database, &format!("SELECT count(*) FROM {table}"));
        }
        assert!(
            output.status.success(),
            "{database}.{table}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "1",
            "{database}.{table}"
        );
    }
    let foreign = postgres.psql("users", "SELECT count(*) FROM orders");
    assert!(
        !foreign.status.success(),
        "the users database has no orders table"
    );
    // Users' pages on PostgreSQL (the pool form of its reads): keyset
    // pages of one, in creation order.
    let mut users = UsersClient::new(mesh.channel("users"));
    let second = users
        .create_user(CreateUserRequest {
            email: "pg2@example.com".into(),
            display_name: "Second".into(),
        })
        .await
        .expect("create a second user")
        .into_inner()
        .user_id;
    let first_page = users
        .list_users(ListUsersRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("first page")
        .into_inner();
    let next_page = users
        .list_users(ListUsersRequest {
            page_size: 1,
            page_token: first_page.next_page_token.clone(),
        })
        .await
        .expect("next page")
        .into_inner();
    let listed: Vec<String> = first_page
        .users
        .iter()
        .chain(&next_page.users)
        .map(|user| user.user_id.clone())
        .collect();
    assert_eq!(listed, vec![user_id.clone(), second]);

    // Restart everything: the data is in PostgreSQL, not in the processes.
    for process in &mut processes {
        process.child.terminate();
    }
    for process in &mut processes {
        let status = process
            .child
            .wait(Duration::from_secs(15))
            .expect("exits after SIGTERM");
        assert!(status.success(), "{} exited with {status}", process.name);
    }
    let _restarted = start_all(&agent, &postgres, &broker);
    let user = UsersClient::new(mesh.channel("users"))
        .get_user(GetUserRequest { user_id })
        .await
        .expect("user survives")
        .into_inner();
    assert_eq!(user.email, "pg@example.com");
    let again = OrdersClient::new(mesh.channel("orders"))
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("order survives")
        .into_inner();
    assert_eq!(again.status(), OrderStatus::Confirmed);
    let item = InventoryClient::new(mesh.channel("inventory"))
        .get_item(GetItemRequest { sku: "PG-1".into() })
        .await
        .expect("item survives")
        .into_inner();
    assert_eq!((item.available, item.reserved), (7, 0));
}
