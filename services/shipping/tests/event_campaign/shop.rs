//! The campaign's shop: users, inventory and payments (one each, they are
//! not under test), two orders instances and two shipping instances sharing
//! their SQLite databases, and the broker. No Consul: orders calls fixed
//! addresses, everything is plaintext on loopback, and the services find the
//! broker by its URL.

use std::{path::PathBuf, time::Duration};

use events::{Broker, BrokerSettings, BrokerUrl};
use mesh::proto::{
    inventory::v1::{inventory_client::InventoryClient, AddStockRequest},
    orders::v1::orders_client::OrdersClient,
    users::v1::{users_client::UsersClient, CreateUserRequest},
};
use testkit::{RabbitServer, RedisServer, ServiceOptions, ServiceProcess};
use tonic::transport::Channel;

/// The SKUs in stock (plenty of units: the campaign is not about stock).
pub const SKUS: [&str; 3] = ["BOLT-1", "NUT-2", "GEAR-3"];

/// How long a relay holds an order's events (short: killed relays' rows
/// move to the other instance quickly).
const OUTBOX_LEASE: &str = "1s";
/// How often each orders instance sweeps for rows left behind (a killed
/// relay's, once their lease ran out): short, so a run does not wait for it.
const OUTBOX_SWEEP: &str = "250ms";
/// How long a delivery stays with a consumer before another takes it.
const CLAIM_IDLE: &str = "1s";

/// The broker under test.
pub enum BrokerServer {
    Redis(RedisServer),
    Rabbit(RabbitServer),
}

impl BrokerServer {
    pub fn start(kind: &str) -> Self {
        match kind {
            "redis" => Self::Redis(RedisServer::start()),
            _ => Self::Rabbit(RabbitServer::start()),
        }
    }

    pub fn url(&self) -> String {
        match self {
            Self::Redis(server) => server.url(),
            Self::Rabbit(server) => server.url(),
        }
    }

    pub fn kill(&mut self) {
        match self {
            Self::Redis(server) => server.kill(),
            Self::Rabbit(server) => server.kill(),
        }
    }

    pub fn resume(&mut self) {
        match self {
            Self::Redis(server) => server.resume(),
            Self::Rabbit(server) => server.resume(),
        }
    }

    /// SIGSTOP: the broker stalls with its connections open.
    pub fn freeze(&mut self) {
        match self {
            Self::Redis(server) => server.freeze(),
            Self::Rabbit(server) => server.freeze(),
        }
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn thaw(&mut self) {
        match self {
            Self::Redis(server) => server.thaw(),
            Self::Rabbit(server) => server.thaw(),
        }
    }
}

/// Test-only pauses a victim instance starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// orders: between the commit and the publish.
    BeforePublish,
    /// orders: between the broker's confirmation and the mark.
    AfterPublish,
    /// shipping: between the effect and the acknowledgement.
    BeforeAck,
}

impl Pause {
    fn flag(self) -> &'static str {
        match self {
            Self::BeforePublish => "--fault-pause-before-publish",
            Self::AfterPublish => "--fault-pause-after-publish",
            Self::BeforeAck => "--fault-pause-before-ack",
        }
    }

    /// The log line the instance writes when it reached the pause.
    pub fn marker(self) -> &'static str {
        match self {
            Self::BeforePublish => "committed, pausing before the publish",
            Self::AfterPublish => "published, pausing before the removal",
            Self::BeforeAck => "effect committed, pausing before the acknowledgement",
        }
    }
}

pub struct Shop {
    pub broker: BrokerServer,
    pub data: tempfile::TempDir,
    _users: ServiceProcess,
    _inventory: ServiceProcess,
    _payments: ServiceProcess,
    upstreams: [String; 3],
    pub orders: Vec<ServiceProcess>,
    pub shipping: Vec<ServiceProcess>,
    pub clients: Vec<OrdersClient<Channel>>,
    pub user_id: String,
}

fn quiet(data: PathBuf, port: Option<u16>, args: Vec<String>) -> ServiceOptions {
    ServiceOptions {
        data_dir: Some(data),
        port,
        drain: Some(Duration::ZERO),
        args,
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..ServiceOptions::default()
    }
}

fn lazy(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_lazy()
}

impl Shop {
    pub async fn start(kind: &str) -> Self {
        let broker = BrokerServer::start(kind);
        let data = tempfile::tempdir().expect("temp dir");
        let start = |service: &str| {
            ServiceProcess::start(service, quiet(data.path().to_owned(), None, Vec::new()))
        };
        let users = start("users");
        let inventory = start("inventory");
        let payments = start("payments");
        let upstreams = [users.addr(), inventory.addr(), payments.addr()];
        let mut shop = Self {
            broker,
            data,
            _users: users,
            _inventory: inventory,
            _payments: payments,
            upstreams,
            orders: Vec::new(),
            shipping: Vec::new(),
            clients: Vec::new(),
            user_id: String::new(),
        };
        for index in 0..2 {
            let orders = ServiceProcess::start("orders", shop.orders_options(None, None));
            shop.clients.push(OrdersClient::new(lazy(&orders.addr())));
            shop.orders.push(orders);
            let _ = index;
            shop.shipping.push(ServiceProcess::start(
                "shipping",
                shop.shipping_options(None, None),
            ));
        }
        shop.user_id = UsersClient::new(lazy(&shop.upstreams[0]))
            .create_user(CreateUserRequest {
                email: "events-campaign@example.com".into(),
                display_name: "Events campaign".into(),
            })
            .await
            .expect("create user")
            .into_inner()
            .user_id;
        let mut inventory = InventoryClient::new(lazy(&shop.upstreams[1]));
        for sku in SKUS {
            inventory
                .add_stock(AddStockRequest {
                    sku: sku.to_owned(),
                    quantity: 1_000_000,
                    unit_price_cents: 100,
                    currency: "EUR".into(),
                })
                .await
                .expect("add stock");
        }
        shop
    }

    /// A client of the broker, as the services see it.
    pub fn broker_client(&self) -> Broker {
        events::connect(&BrokerSettings::new(
            BrokerUrl::parse(&self.broker.url()).expect("broker URL"),
        ))
        .expect("broker client")
    }

    fn orders_options(&self, port: Option<u16>, pause: Option<Pause>) -> ServiceOptions {
        let mut args = vec![
            "--users-addr".to_owned(),
            self.upstreams[0].clone(),
            "--inventory-addr".to_owned(),
            self.upstreams[1].clone(),
            "--payments-addr".to_owned(),
            self.upstreams[2].clone(),
            "--broker-url".to_owned(),
            self.broker.url(),
            "--outbox-lease".to_owned(),
            OUTBOX_LEASE.to_owned(),
            // A commit wakes its own instance's relay at once; the other
            // instance's sweep is what picks up a killed relay's rows.
            "--outbox-sweep".to_owned(),
            OUTBOX_SWEEP.to_owned(),
            "--recovery-interval-ms".to_owned(),
            "300".to_owned(),
        ];
        if let Some(pause) = pause {
            args.extend([pause.flag().to_owned(), "20s".to_owned()]);
        }
        quiet(self.data.path().to_owned(), port, args)
    }

    fn shipping_options(&self, port: Option<u16>, pause: Option<Pause>) -> ServiceOptions {
        let mut args = vec![
            "--broker-url".to_owned(),
            self.broker.url(),
            "--event-claim-idle".to_owned(),
            CLAIM_IDLE.to_owned(),
        ];
        if let Some(pause) = pause {
            args.extend([pause.flag().to_owned(), "20s".to_owned()]);
        }
        quiet(self.data.path().to_owned(), port, args)
    }

    /// Restarts orders instance `index` (on its port), with `pause` or without.
    pub fn restart_orders(&mut self, index: usize, pause: Option<Pause>) {
        let port = self.orders[index].port;
        self.orders[index].child.kill();
        self.orders[index] =
            ServiceProcess::start("orders", self.orders_options(Some(port), pause));
    }

    /// Restarts shipping instance `index` (on its port), with `pause` or without.
    pub fn restart_shipping(&mut self, index: usize, pause: Option<Pause>) {
        let port = self.shipping[index].port;
        self.shipping[index].child.kill();
        self.shipping[index] =
            ServiceProcess::start("shipping", self.shipping_options(Some(port), pause));
    }

    /// Stops shipping instance `index` (SIGKILL) until it is restarted.
    pub fn kill_shipping(&mut self, index: usize) {
        self.shipping[index].child.kill();
    }

    pub fn orders_db(&self) -> String {
        format!(
            "sqlite://{}?mode=ro",
            self.data.path().join("orders.db").display()
        )
    }

    pub fn shipping_db(&self) -> String {
        format!(
            "sqlite://{}?mode=ro",
            self.data.path().join("shipping.db").display()
        )
    }
}
