//! The campaign's shop: one Consul agent, users, inventory, two payments and
//! two orders instances sharing their SQLite databases. orders[0] resolves
//! everything through Consul and the mesh client; orders[1] calls fixed
//! addresses, payments[0] and inventory through fault proxies.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use mesh::proto::{
    inventory::v1::{inventory_client::InventoryClient, AddStockRequest},
    orders::v1::orders_client::OrdersClient,
    users::v1::{users_client::UsersClient, CreateUserRequest},
};
use nix::sys::signal::Signal;
use testkit::{ConsulAgent, ServiceOptions, ServiceProcess};
use tonic::transport::Channel;

use crate::{
    plan::{bulk_sku, BULK_PRICE, BULK_SKUS, BULK_UNITS, SKUS},
    proxy::FaultProxy,
    DECLINE_OVER_CENTS, LEASE_MS, RECOVERY_INTERVAL_MS, RESERVATION_TTL_MS, SWEEP_MS,
    UPSTREAM_TIMEOUT_MS,
};

pub struct Shop {
    pub agent: ConsulAgent,
    pub data: tempfile::TempDir,
    pub users: ServiceProcess,
    pub inventory: ServiceProcess,
    pub payments: Vec<ServiceProcess>,
    pub orders: Vec<ServiceProcess>,
    pub payments_proxy: FaultProxy,
    pub inventory_proxy: FaultProxy,
    pub clients: Vec<OrdersClient<Channel>>,
    pub user_id: String,
    /// How many times orders' database was wiped.
    pub epochs: usize,
}

#[derive(Debug, Clone, Copy)]
pub enum Victim {
    Orders(usize),
    Payments(usize),
    Inventory,
}

fn options(agent: &ConsulAgent, data: &Path, port: Option<u16>, args: &[String]) -> ServiceOptions {
    ServiceOptions {
        consul: Some(agent.http_addr()),
        data_dir: Some(data.to_owned()),
        port,
        drain: Some(Duration::ZERO),
        args: [&["--check-interval".to_owned(), "200".to_owned()][..], args].concat(),
        // Quiet logs: a thousand runs write a lot otherwise.
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..ServiceOptions::default()
    }
}

/// The flags of an upstream service.
fn upstream_args(service: &str) -> Vec<String> {
    match service {
        "payments" => vec![
            "--decline-over-cents".to_owned(),
            DECLINE_OVER_CENTS.to_string(),
        ],
        // Expired reservations are released promptly (the TTLs are short).
        "inventory" => vec!["--reservation-sweep".to_owned(), SWEEP_MS.to_string()],
        _ => Vec::new(),
    }
}

fn lazy(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_lazy()
}

impl Shop {
    pub async fn start() -> Self {
        let agent = ConsulAgent::start();
        let data = tempfile::tempdir().expect("temp dir");
        let start = |service: &str| {
            ServiceProcess::start(
                service,
                options(&agent, data.path(), None, &upstream_args(service)),
            )
        };
        let users = start("users");
        let inventory = start("inventory");
        let payments: Vec<ServiceProcess> = (0..2).map(|_| start("payments")).collect();
        let payments_proxy = FaultProxy::start(payments[0].addr().parse().expect("address")).await;
        let inventory_proxy = FaultProxy::start(inventory.addr().parse().expect("address")).await;
        let mut shop = Self {
            agent,
            data,
            users,
            inventory,
            payments,
            orders: Vec::new(),
            payments_proxy,
            inventory_proxy,
            clients: Vec::new(),
            user_id: String::new(),
            epochs: 0,
        };
        for index in 0..2 {
            let process = ServiceProcess::start("orders", shop.orders_options(index, None));
            shop.orders.push(process);
        }
        for (service, count) in [("users", 1), ("inventory", 1), ("payments", 2)] {
            shop.agent
                .wait_passing(service, count, Duration::from_secs(30));
        }
        shop.clients = shop
            .orders
            .iter()
            .map(|orders| OrdersClient::new(lazy(&orders.addr())))
            .collect();
        shop.user_id = UsersClient::new(lazy(&shop.users.addr()))
            .create_user(CreateUserRequest {
                email: "campaign@example.com".into(),
                display_name: "Campaign".into(),
            })
            .await
            .expect("create user")
            .into_inner()
            .user_id;
        let mut inventory = InventoryClient::new(lazy(&shop.inventory.addr()));
        let stock = SKUS
            .iter()
            .map(|(sku, units, price)| ((*sku).to_owned(), *units, *price))
            .chain((0..BULK_SKUS).map(|index| (bulk_sku(index), BULK_UNITS, BULK_PRICE)));
        for (sku, units, price) in stock {
            inventory
                .add_stock(AddStockRequest {
                    sku,
                    quantity: units,
                    unit_price_cents: price,
                    currency: "EUR".into(),
                })
                .await
                .expect("add stock");
        }
        shop
    }

    fn orders_options(&self, index: usize, port: Option<u16>) -> ServiceOptions {
        let mut args: Vec<String> = [
            ("--upstream-timeout", UPSTREAM_TIMEOUT_MS),
            ("--saga-lease", LEASE_MS),
            ("--recovery-interval", RECOVERY_INTERVAL_MS),
            ("--reservation-ttl", RESERVATION_TTL_MS),
        ]
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect();
        if index == 1 {
            args.extend([
                "--users-addr".into(),
                self.users.addr(),
                "--inventory-addr".into(),
                self.inventory_proxy.address.to_string(),
                "--payments-addr".into(),
                self.payments_proxy.address.to_string(),
            ]);
        }
        let mut options = options(&self.agent, self.data.path(), port, &args);
        if let Some(process) = self.orders.get(index) {
            options.instance_id = Some(process.instance_id.clone());
        }
        options
    }

    fn process(&mut self, which: Victim) -> &mut ServiceProcess {
        match which {
            Victim::Orders(i) => &mut self.orders[i],
            Victim::Payments(i) => &mut self.payments[i],
            Victim::Inventory => &mut self.inventory,
        }
    }

    /// SIGKILL, then the same instance again (port, id, data).
    pub fn kill_and_restart(&mut self, which: Victim) {
        let options = self.same_options(which);
        let name = self.process(which).name.clone();
        let slot = self.process(which);
        slot.child.kill();
        *slot = ServiceProcess::start(&name, options);
    }

    /// SIGSTOP for `pause`, then SIGCONT: the process keeps its sockets and
    /// leases but runs nothing meanwhile.
    pub async fn pause(&mut self, which: Victim, pause: Duration) {
        self.process(which).child.signal(Signal::SIGSTOP);
        tokio::time::sleep(pause).await;
        self.process(which).child.signal(Signal::SIGCONT);
    }

    fn same_options(&self, which: Victim) -> ServiceOptions {
        match which {
            Victim::Orders(i) => self.orders_options(i, Some(self.orders[i].port)),
            Victim::Payments(i) => self.upstream_options(&self.payments[i]),
            Victim::Inventory => self.upstream_options(&self.inventory),
        }
    }

    fn upstream_options(&self, process: &ServiceProcess) -> ServiceOptions {
        let mut options = options(
            &self.agent,
            self.data.path(),
            Some(process.port),
            &upstream_args(&process.name),
        );
        options.instance_id = Some(process.instance_id.clone());
        options
    }

    /// Orders' database is lost: both instances die, the database (with its
    /// WAL) moves to `epochs/<n>/`, both start again on an empty one.
    /// Returns the archived database file.
    pub fn wipe_orders_database(&mut self) -> PathBuf {
        for orders in &mut self.orders {
            orders.child.kill();
        }
        self.epochs += 1;
        let archive = self
            .data
            .path()
            .join("epochs")
            .join(self.epochs.to_string());
        std::fs::create_dir_all(&archive).expect("archive folder");
        for entry in std::fs::read_dir(self.data.path()).expect("read the data folder") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned());
            if let Some(name) = name.filter(|name| name.starts_with("orders.db")) {
                std::fs::rename(&path, archive.join(name)).expect("move the orders database");
            }
        }
        for index in 0..self.orders.len() {
            let options = self.orders_options(index, Some(self.orders[index].port));
            self.orders[index] = ServiceProcess::start("orders", options);
        }
        archive.join("orders.db")
    }
}
