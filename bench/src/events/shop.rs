//! The processes `mesh-bench events` measures: a broker (Redis or RabbitMQ,
//! started by `localenv` as `mesh up` starts it), users, inventory and
//! payments, orders with its outbox (`--events on`) and orders without
//! (`--events off`) over the same three, and shipping (`--shipping`
//! instances over one database, two as `mesh up` runs it). No
//! Consul: everything is plaintext on loopback and is given its peers'
//! addresses and the broker's URL, so the figures are the events path's
//! alone.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use localenv::{
    brokers::{
        rabbit::{LocalRabbit, RabbitConfig},
        redis::{LocalRedis, RedisConfig},
    },
    ports::free_port,
    Cancel, ProcessSpec, Supervised, TcpProbe,
};

/// The longest wait for a process to serve.
const START: Duration = Duration::from_secs(90);

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BrokerKind {
    /// Redis Streams (the default broker).
    Redis,
    /// RabbitMQ (quorum queues).
    Rabbitmq,
}

/// The running broker.
enum Broker {
    Redis(Box<LocalRedis>),
    Rabbit(Box<LocalRabbit>),
}

/// One service process and its gRPC address.
pub(crate) struct Service {
    process: Supervised,
    /// `127.0.0.1:<port>`.
    pub(crate) addr: SocketAddr,
}

impl Service {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Everything the run needs, stopped and reaped when dropped.
pub(crate) struct EventsShop {
    broker: Broker,
    broker_url: String,
    bin: PathBuf,
    /// Where orders (events on) and shipping keep their databases.
    pub(crate) data: PathBuf,
    /// users, inventory, payments.
    upstreams: Vec<Service>,
    /// orders with its outbox.
    pub(crate) orders_on: Service,
    /// orders without events (its own database).
    pub(crate) orders_off: Service,
    /// The shipping instances, while they run.
    shipping: Vec<Service>,
    /// How many shipping instances run.
    shipping_instances: usize,
    pub(crate) users_addr: SocketAddr,
    pub(crate) inventory_addr: SocketAddr,
}

impl EventsShop {
    /// Starts the broker and every service in `dir`, with the binaries of
    /// `bin` (the folder `mesh-bench` is in, by default); the first orders
    /// with its outbox when `outbox`, without it in a control run.
    pub(crate) fn start(
        kind: BrokerKind,
        shipping_instances: usize,
        bin: &Path,
        dir: &Path,
        outbox: bool,
        outbox_last: bool,
    ) -> anyhow::Result<Self> {
        let cancel = Cancel::default();
        let (broker, broker_url) = match kind {
            BrokerKind::Redis => {
                let port = free_port()?;
                let redis = RedisConfig::new(RedisConfig::find_program()?, port, dir.join("redis"))
                    .start(START, &cancel)?;
                (
                    Broker::Redis(Box::new(redis)),
                    format!("redis://127.0.0.1:{port}"),
                )
            }
            BrokerKind::Rabbitmq => {
                let rabbit_dir = dir.join("rabbitmq");
                std::fs::create_dir_all(&rabbit_dir)?;
                let amqp = free_port()?;
                let config = RabbitConfig::new(
                    &rabbit_dir,
                    format!("bench{amqp}"),
                    amqp,
                    free_port()?,
                    free_port()?,
                )?;
                let rabbit = config.start(START, &cancel)?;
                (
                    Broker::Rabbit(Box::new(rabbit)),
                    format!("amqp://127.0.0.1:{amqp}/%2f"),
                )
            }
        };
        let data = dir.join("on");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let start = |name: &str, data: &Path, args: Vec<String>| -> anyhow::Result<Service> {
            start_service(bin, &logs, name, data, args)
        };
        let common = dir.join("upstreams");
        let users = start("users", &common, vec![])?;
        let inventory = start("inventory", &common, vec![])?;
        let payments = start("payments", &common, vec![])?;
        let upstream_args = vec![
            "--users-addr".to_owned(),
            users.addr.to_string(),
            "--inventory-addr".to_owned(),
            inventory.addr.to_string(),
            "--payments-addr".to_owned(),
            payments.addr.to_string(),
        ];
        let mut on = upstream_args.clone();
        on.extend([
            "--events".into(),
            if outbox { "on" } else { "off" }.into(),
            "--broker-url".into(),
            broker_url.clone(),
        ]);
        let mut off = upstream_args;
        off.extend(["--events".into(), "off".into()]);
        let (orders_on, orders_off) = if outbox_last {
            let orders_off = start("orders", &dir.join("off"), off)?;
            (start("orders", &data, on)?, orders_off)
        } else {
            let orders_on = start("orders", &data, on)?;
            (orders_on, start("orders", &dir.join("off"), off)?)
        };
        let (users_addr, inventory_addr) = (users.addr, inventory.addr);
        let mut shop = Self {
            broker,
            broker_url,
            bin: bin.to_owned(),
            data,
            upstreams: vec![users, inventory, payments],
            orders_on,
            orders_off,
            shipping: Vec::new(),
            shipping_instances,
            users_addr,
            inventory_addr,
        };
        shop.start_shipping()?;
        Ok(shop)
    }

    /// Starts the shipping instances (if they are not running).
    pub(crate) fn start_shipping(&mut self) -> anyhow::Result<()> {
        let logs = self.data.join("../logs");
        while self.shipping.len() < self.shipping_instances {
            let args = vec!["--broker-url".to_owned(), self.broker_url.clone()];
            let service = start_service(&self.bin, &logs, "shipping", &self.data, args)?;
            self.shipping.push(service);
        }
        Ok(())
    }

    /// Stops the shipping instances (SIGTERM, then SIGKILL).
    pub(crate) fn stop_shipping(&mut self) {
        for mut service in self.shipping.drain(..) {
            let _ = service.process.stop(Duration::from_secs(5));
        }
    }

    /// Freezes the broker (SIGSTOP): the relay's publishes wait.
    pub(crate) fn freeze_broker(&mut self) {
        match &mut self.broker {
            Broker::Redis(redis) => redis.freeze(),
            Broker::Rabbit(rabbit) => rabbit.freeze_node(),
        }
    }

    /// The process groups whose CPU time a saturation round is charged
    /// with: both orders (each is idle while the other is measured, and the
    /// relay's tail after an "on" round still counts), the broker, and the
    /// three upstreams.
    pub(crate) fn cpu_groups(&mut self) -> super::cpu::Groups {
        let broker = match &mut self.broker {
            Broker::Redis(redis) => Some(redis.process().pid()),
            Broker::Rabbit(rabbit) => rabbit.node_pid(),
        };
        let mut groups = vec![
            ("orders (events on)", self.orders_on.process.pid()),
            ("orders (events off)", self.orders_off.process.pid()),
        ];
        groups.extend(broker.map(|pid| ("broker", pid)));
        for (name, upstream) in ["users", "inventory", "payments"]
            .into_iter()
            .zip(&self.upstreams)
        {
            groups.push((name, upstream.process.pid()));
        }
        super::cpu::Groups(groups)
    }

    /// Lets it run again (SIGCONT).
    pub(crate) fn thaw_broker(&mut self) {
        match &mut self.broker {
            Broker::Redis(redis) => redis.thaw(),
            Broker::Rabbit(rabbit) => rabbit.thaw_node(),
        }
    }
}

/// Starts `bin`'s `name` on a free loopback port, with its data in `data`,
/// its log in `logs` and `args` after the common flags; waits until it serves.
pub(crate) fn start_service(
    bin: &Path,
    logs: &Path,
    name: &str,
    data: &Path,
    args: Vec<String>,
) -> anyhow::Result<Service> {
    std::fs::create_dir_all(data)?;
    let port = free_port()?;
    let health = free_port()?;
    let instance = format!("{name}-{port}");
    let program = bin.join(name);
    anyhow::ensure!(
        program.is_file(),
        "{} is missing: build the services first (cargo build --release --workspace)",
        program.display()
    );
    let spec = ProcessSpec::new(name, program, logs.join(format!("{instance}.log")))
        .args([
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--data-dir".to_owned(),
            data.display().to_string(),
            "--instance-id".to_owned(),
            instance,
            "--health-listen".to_owned(),
            format!("127.0.0.1:{health}"),
            "--mtls".to_owned(),
            "off".to_owned(),
            "--no-consul".to_owned(),
        ])
        .args(args);
    let mut process = Supervised::spawn(spec)?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    process
        .wait_ready(&mut TcpProbe::new(addr), START, &Cancel::default())
        .with_context(|| format!("{name} did not start"))?;
    Ok(Service { process, addr })
}
