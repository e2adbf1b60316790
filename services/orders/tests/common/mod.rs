//! A small shop for the orders tests: real `users`, `inventory` and
//! `payments` processes, and the real `orders` binary wired to them.
#![allow(dead_code)] // Each test file uses a part of it.

use std::path::PathBuf;

use mesh::proto::{
    inventory::v1::{inventory_client::InventoryClient, AddStockRequest, GetItemRequest, Item},
    orders::v1::{orders_client::OrdersClient, OrderLine, PlaceOrderRequest},
    payments::v1::payments_client::PaymentsClient,
    users::v1::{users_client::UsersClient, CreateUserRequest},
};
use testkit::{ServiceOptions, ServiceProcess};
use tonic::transport::Channel;

/// The three upstream services, each on its own free port and data folder.
pub struct Upstreams {
    pub users: ServiceProcess,
    pub inventory: ServiceProcess,
    pub payments: ServiceProcess,
    /// The payments data folder (kept across payments restarts).
    pub payments_dir: tempfile::TempDir,
    /// The inventory data folder (tests may read or prepare its database).
    pub inventory_dir: tempfile::TempDir,
    payments_args: Vec<String>,
}

impl Upstreams {
    /// Starts users, inventory and payments (payments with `payments_args`).
    pub fn start(payments_args: &[&str]) -> Self {
        Self::start_with_inventory(payments_args, tempfile::tempdir().expect("temp dir"))
    }

    /// Like [`Upstreams::start`], inventory serving the database already in
    /// `inventory_dir` (e.g. one made by an older schema).
    pub fn start_with_inventory(payments_args: &[&str], inventory_dir: tempfile::TempDir) -> Self {
        let payments_dir = tempfile::tempdir().expect("temp dir");
        let payments_args: Vec<String> = payments_args.iter().map(|a| a.to_string()).collect();
        Self {
            users: ServiceProcess::start("users", ServiceOptions::default()),
            inventory: ServiceProcess::start(
                "inventory",
                ServiceOptions {
                    data_dir: Some(inventory_dir.path().to_owned()),
                    ..ServiceOptions::default()
                },
            ),
            payments: ServiceProcess::start(
                "payments",
                ServiceOptions {
                    data_dir: Some(payments_dir.path().to_owned()),
                    args: payments_args.clone(),
                    ..ServiceOptions::default()
                },
            ),
            payments_dir,
            inventory_dir,
            payments_args,
        }
    }

    /// The `--users-addr …` flags for orders.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--users-addr".into(),
            self.users.addr(),
            "--inventory-addr".into(),
            self.inventory.addr(),
            "--payments-addr".into(),
            self.payments.addr(),
        ]
    }

    /// Starts payments again on the same port and data folder (after a kill),
    /// with `args` instead of the original flags.
    pub fn restart_payments(&mut self, args: Option<&[&str]>) {
        self.payments.child.kill();
        let args = match args {
            Some(args) => args.iter().map(|a| a.to_string()).collect(),
            None => self.payments_args.clone(),
        };
        self.payments = ServiceProcess::start(
            "payments",
            ServiceOptions {
                port: Some(self.payments.port),
                data_dir: Some(self.payments_dir.path().to_owned()),
                args,
                ..ServiceOptions::default()
            },
        );
    }

    /// A read-only pool on `file` in `dir` (a service's SQLite database).
    pub async fn read_only(dir: &std::path::Path, file: &str) -> sqlx::SqlitePool {
        let path: PathBuf = dir.join(file);
        sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{}?mode=ro", path.display()))
            .await
            .unwrap_or_else(|error| panic!("open {} read-only: {error}", path.display()))
    }

    /// How many payments the payments database holds for `user_id`: read from
    /// its SQLite file, read-only, so that "charged once" is a fact and not
    /// an inference from one answer.
    pub async fn payments_of(&self, user_id: &str) -> i64 {
        let path: PathBuf = self.payments_dir.path().join("payments.db");
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{}?mode=ro", path.display()))
            .await
            .expect("open the payments database read-only");
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&pool)
            .await
            .expect("count payments");
        pool.close().await;
        count
    }

    pub async fn users_client(&self) -> UsersClient<Channel> {
        UsersClient::connect(format!("http://{}", self.users.addr()))
            .await
            .expect("connect to users")
    }

    pub async fn inventory_client(&self) -> InventoryClient<Channel> {
        InventoryClient::connect(format!("http://{}", self.inventory.addr()))
            .await
            .expect("connect to inventory")
    }

    pub async fn payments_client(&self) -> PaymentsClient<Channel> {
        PaymentsClient::connect(format!("http://{}", self.payments.addr()))
            .await
            .expect("connect to payments")
    }

    /// Creates a user; returns its id.
    pub async fn user(&self, name: &str) -> String {
        self.users_client()
            .await
            .create_user(CreateUserRequest {
                email: format!("{name}@example.com"),
                display_name: name.into(),
            })
            .await
            .expect("create user")
            .into_inner()
            .user_id
    }

    /// Adds `quantity` units of `sku` at `unit_price_cents` (EUR).
    pub async fn stock(&self, sku: &str, quantity: i64, unit_price_cents: i64) {
        self.stock_in(sku, quantity, unit_price_cents, "EUR").await
    }

    /// Adds `quantity` units of `sku` at `unit_price_cents` in `currency`.
    pub async fn stock_in(&self, sku: &str, quantity: i64, unit_price_cents: i64, currency: &str) {
        self.inventory_client()
            .await
            .add_stock(AddStockRequest {
                sku: sku.into(),
                quantity,
                unit_price_cents,
                currency: currency.into(),
            })
            .await
            .expect("add stock");
    }

    /// One SKU's stock.
    pub async fn item(&self, sku: &str) -> Item {
        self.inventory_client()
            .await
            .get_item(GetItemRequest { sku: sku.into() })
            .await
            .expect("get item")
            .into_inner()
    }
}

/// Starts the real `orders` binary against `upstreams`, with more `args`.
pub fn start_orders(upstreams: &Upstreams, args: &[&str]) -> ServiceProcess {
    start_orders_with(upstreams, args, ServiceOptions::default())
}

/// Like [`start_orders`], with explicit options (data folder, drain…).
pub fn start_orders_with(
    upstreams: &Upstreams,
    args: &[&str],
    mut options: ServiceOptions,
) -> ServiceProcess {
    options.args = upstreams.flags();
    options.args.extend(args.iter().map(|a| a.to_string()));
    ServiceProcess::start("orders", options)
}

pub async fn orders_client(orders: &ServiceProcess) -> OrdersClient<Channel> {
    OrdersClient::connect(format!("http://{}", orders.addr()))
        .await
        .expect("connect to orders")
}

/// A PlaceOrder request (currency empty: EUR).
pub fn order(request_id: &str, user_id: &str, lines: &[(&str, i64)]) -> PlaceOrderRequest {
    PlaceOrderRequest {
        request_id: request_id.into(),
        user_id: user_id.into(),
        items: lines
            .iter()
            .map(|(sku, quantity)| OrderLine {
                sku: (*sku).into(),
                quantity: *quantity,
                unit_price_cents: 0,
            })
            .collect(),
        currency: String::new(),
    }
}
