//! The saga's fault campaign: seeded randomized runs against real processes
//! (a Consul agent, users, inventory, two payments and two orders instances
//! sharing their databases), each a small batch of orders with one fault:
//!
//! - SIGKILL of an orders, payments or inventory instance at a random point
//!   (then restarted on the same port and data);
//! - payments latency beyond orders' per-call timeout, and a lost reply (the
//!   server commits, the connection dies before the answer: UNAVAILABLE),
//!   both injected by a TCP proxy between orders B and payments;
//! - the same PlaceOrder and CancelOrder sent to both orders instances at once;
//! - an orders instance killed, restarted, and killed again mid-recovery.
//!
//! After each run, once the fault is healed, the campaign waits until every
//! order is final and checks the invariants on the three databases: every
//! order final; stock conserved (initial = available + reserved + committed,
//! reserved = 0, committed = what confirmed orders hold); a CONFIRMED order
//! has exactly one CAPTURED payment of its total; a REJECTED or CANCELLED
//! order keeps no money; no payment without an order; one order per
//! request_id. A failure prints the seed and the run.
//!
//! `cargo test -p orders --test fault_campaign` runs 200 runs (the suite);
//! `-- --runs 1000 [--seed N] [--report FILE]` (or MESH_CAMPAIGN_RUNS,
//! MESH_CAMPAIGN_SEED) runs more and writes the figures of docs/SAGA.md.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mesh::proto::{
    inventory::v1::{inventory_client::InventoryClient, AddStockRequest},
    orders::v1::{
        orders_client::OrdersClient, CancelOrderRequest, OrderLine, OrderStatus, PlaceOrderRequest,
    },
    users::v1::{users_client::UsersClient, CreateUserRequest},
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use sqlx::{sqlite::SqlitePoolOptions, Row, SqlitePool};
use testkit::{ConsulAgent, ServiceOptions, ServiceProcess};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::{transport::Channel, Code};

/// Orders' timing in the campaign: short, so a run is short.
const UPSTREAM_TIMEOUT_MS: u64 = 250;
const LEASE_MS: u64 = 800;
const RECOVERY_INTERVAL_MS: u64 = 100;
/// How long a caller waits for one PlaceOrder/CancelOrder.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// The most a run may take to settle once its fault is healed.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// The SKUs: (sku, units, unit price). SCARCE runs out; LUX × 2 is declined.
const SKUS: [(&str, i64, i64); 4] = [
    ("APPLE", 1_000_000, 120),
    ("PEAR", 1_000_000, 75),
    ("LUX", 1_000_000, 60_000),
    ("SCARCE", 40, 500),
];
/// payments declines charges above this.
const DECLINE_OVER_CENTS: i64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    KillOrders,
    KillPayments,
    KillInventory,
    PaymentsLatency,
    LostReply,
    DuplicateRequests,
    OrdersRestartMidRecovery,
}

const FAULTS: [Fault; 7] = [
    Fault::KillOrders,
    Fault::KillPayments,
    Fault::KillInventory,
    Fault::PaymentsLatency,
    Fault::LostReply,
    Fault::DuplicateRequests,
    Fault::OrdersRestartMidRecovery,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillOrders => "SIGKILL orders",
            Fault::KillPayments => "SIGKILL payments",
            Fault::KillInventory => "SIGKILL inventory",
            Fault::PaymentsLatency => "payments slower than the per-call timeout",
            Fault::LostReply => "lost reply (committed, client sees UNAVAILABLE)",
            Fault::DuplicateRequests => "duplicate PlaceOrder/CancelOrder on two instances",
            Fault::OrdersRestartMidRecovery => "orders restarted mid-recovery",
        }
    }
}

// ---- arguments --------------------------------------------------------------

struct Args {
    runs: usize,
    seed: u64,
    report: Option<PathBuf>,
}

fn args() -> Args {
    let mut runs: usize = std::env::var("MESH_CAMPAIGN_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut seed: u64 = std::env::var("MESH_CAMPAIGN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let mut report = None;
    let mut args = std::env::args().skip(1);
    // Other flags (e.g. the suite's --test-threads) are not ours: ignored.
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).expect("--seed N"),
            "--report" => report = args.next().map(PathBuf::from),
            _ => {}
        }
    }
    Args { runs, seed, report }
}

// ---- the fault proxy ----------------------------------------------------------

const PASS: u8 = 0;
const DELAY: u8 = 1;
const DROP_REPLIES: u8 = 2;

/// A TCP proxy in front of one payments instance: passes bytes, delays the
/// replies beyond orders' timeout, or kills the connection when a reply
/// comes (the request was served; the answer is lost).
struct FaultProxy {
    address: SocketAddr,
    mode: Arc<AtomicU8>,
}

impl FaultProxy {
    async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let mode = Arc::new(AtomicU8::new(PASS));
        let shared = Arc::clone(&mode);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pipe(client, backend, Arc::clone(&shared)));
            }
        });
        Self { address, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

async fn pipe(client: TcpStream, backend: SocketAddr, mode: Arc<AtomicU8>) {
    let Ok(server) = TcpStream::connect(backend).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            match mode.load(Ordering::SeqCst) {
                DROP_REPLIES => return,
                DELAY => tokio::time::sleep(Duration::from_millis(UPSTREAM_TIMEOUT_MS * 2)).await,
                _ => {}
            }
            if client_write.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    // Either side ending closes both (dropping the halves).
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

// ---- the shop -----------------------------------------------------------------

struct Shop {
    agent: ConsulAgent,
    data: tempfile::TempDir,
    users: ServiceProcess,
    inventory: ServiceProcess,
    payments: Vec<ServiceProcess>,
    /// orders[0] resolves everything through Consul; orders[1] calls fixed
    /// addresses, payments through the fault proxy.
    orders: Vec<ServiceProcess>,
    proxy: FaultProxy,
    clients: Vec<OrdersClient<Channel>>,
    user_id: String,
}

fn options(
    shop_agent: &ConsulAgent,
    data: &Path,
    port: Option<u16>,
    args: &[String],
) -> ServiceOptions {
    ServiceOptions {
        consul: Some(shop_agent.http_addr()),
        data_dir: Some(data.to_owned()),
        port,
        drain: Some(Duration::ZERO),
        args: [&["--check-interval".to_owned(), "200".to_owned()][..], args].concat(),
        // Quiet logs: a thousand runs write a lot otherwise.
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..ServiceOptions::default()
    }
}

impl Shop {
    async fn start() -> Self {
        let agent = ConsulAgent::start();
        let data = tempfile::tempdir().expect("temp dir");
        let users = ServiceProcess::start("users", options(&agent, data.path(), None, &[]));
        let inventory = ServiceProcess::start("inventory", options(&agent, data.path(), None, &[]));
        let payments_args = vec![
            "--decline-over-cents".to_owned(),
            DECLINE_OVER_CENTS.to_string(),
        ];
        let payments: Vec<ServiceProcess> = (0..2)
            .map(|_| {
                ServiceProcess::start(
                    "payments",
                    options(&agent, data.path(), None, &payments_args),
                )
            })
            .collect();
        let proxy = FaultProxy::start(payments[0].addr().parse().expect("address")).await;
        let mut shop = Self {
            agent,
            data,
            users,
            inventory,
            payments,
            orders: Vec::new(),
            proxy,
            clients: Vec::new(),
            user_id: String::new(),
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
        for (sku, units, price) in SKUS {
            inventory
                .add_stock(AddStockRequest {
                    sku: sku.into(),
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
        ]
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect();
        if index == 1 {
            args.extend([
                "--users-addr".into(),
                self.users.addr(),
                "--inventory-addr".into(),
                self.inventory.addr(),
                "--payments-addr".into(),
                self.proxy.address.to_string(),
            ]);
        }
        options(&self.agent, self.data.path(), port, &args)
    }

    /// SIGKILL, then the same instance again (port, id, data).
    fn kill_and_restart(&mut self, which: Victim) {
        let options = match which {
            Victim::Orders(i) => self.orders_options_for(i, self.orders[i].port),
            Victim::Payments(i) => self.same_options(&self.payments[i], true),
            Victim::Inventory => self.same_options(&self.inventory, false),
        };
        let (name, slot) = match which {
            Victim::Orders(i) => ("orders", &mut self.orders[i]),
            Victim::Payments(i) => ("payments", &mut self.payments[i]),
            Victim::Inventory => ("inventory", &mut self.inventory),
        };
        slot.child.kill();
        *slot = ServiceProcess::start(name, options);
    }

    fn orders_options_for(&self, index: usize, port: u16) -> ServiceOptions {
        let mut options = self.orders_options(index, Some(port));
        options.instance_id = Some(self.orders[index].instance_id.clone());
        options
    }

    fn same_options(&self, process: &ServiceProcess, payments: bool) -> ServiceOptions {
        let args = if payments {
            vec![
                "--decline-over-cents".to_owned(),
                DECLINE_OVER_CENTS.to_string(),
            ]
        } else {
            Vec::new()
        };
        let mut options = options(&self.agent, self.data.path(), Some(process.port), &args);
        options.instance_id = Some(process.instance_id.clone());
        options
    }
}

#[derive(Debug, Clone, Copy)]
enum Victim {
    Orders(usize),
    Payments(usize),
    Inventory,
}

fn lazy(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_lazy()
}

// ---- one run --------------------------------------------------------------------

struct Planned {
    request_id: String,
    lines: Vec<(&'static str, i64)>,
    /// Which orders instances receive it (two: a concurrent duplicate).
    targets: Vec<usize>,
    cancel: bool,
}

fn plan(rng: &mut StdRng, seed: u64, run: usize, fault: Fault) -> Vec<Planned> {
    let count = rng.random_range(2..=4);
    (0..count)
        .map(|k| {
            let mut lines = Vec::new();
            for (sku, _, _) in SKUS {
                if rng.random_bool(0.4) {
                    let quantity = if sku == "LUX" {
                        rng.random_range(1..=2)
                    } else {
                        rng.random_range(1..=3)
                    };
                    lines.push((sku, quantity));
                }
            }
            if lines.is_empty() {
                lines.push(("APPLE", 1));
            }
            let targets = match fault {
                Fault::DuplicateRequests => vec![0, 1],
                Fault::PaymentsLatency | Fault::LostReply => vec![1],
                _ => vec![rng.random_range(0..2)],
            };
            Planned {
                request_id: format!("c{seed:x}-{run}-{k}"),
                lines,
                targets,
                cancel: rng.random_bool(0.35),
            }
        })
        .collect()
}

/// The callers of one run: every PlaceOrder (and CancelOrder) of the batch.
/// Returns the unexpected answers (INTERNAL, or a duplicate that got
/// another order).
async fn callers(
    shop_clients: Vec<OrdersClient<Channel>>,
    user_id: String,
    planned: Vec<Planned>,
) -> Vec<String> {
    let calls = planned.into_iter().map(|order| {
        let clients = shop_clients.clone();
        let user_id = user_id.clone();
        async move {
            let request = PlaceOrderRequest {
                request_id: order.request_id.clone(),
                user_id,
                items: order
                    .lines
                    .iter()
                    .map(|(sku, quantity)| OrderLine {
                        sku: (*sku).into(),
                        quantity: *quantity,
                        unit_price_cents: 0,
                    })
                    .collect(),
                currency: String::new(),
            };
            let answers = futures::future::join_all(order.targets.iter().map(|&target| {
                let mut client = clients[target].clone();
                let mut request = tonic::Request::new(request.clone());
                request.set_timeout(CALL_TIMEOUT);
                async move {
                    client
                        .place_order(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            }))
            .await;
            let mut problems = Vec::new();
            let mut order_ids: Vec<String> = Vec::new();
            for answer in &answers {
                match answer {
                    Ok(placed) => order_ids.push(placed.order_id.clone()),
                    Err(status) if status.code() == Code::Internal => problems.push(format!(
                        "{}: INTERNAL {}",
                        order.request_id,
                        status.message()
                    )),
                    Err(_) => {}
                }
            }
            order_ids.dedup();
            if order_ids.len() > 1 {
                problems.push(format!("{}: two orders {order_ids:?}", order.request_id));
            }
            let confirmed = answers.iter().find_map(|answer| match answer {
                Ok(placed) if placed.status() == OrderStatus::Confirmed => {
                    Some(placed.order_id.clone())
                }
                _ => None,
            });
            if let (true, Some(order_id)) = (order.cancel, confirmed) {
                let cancels = futures::future::join_all(order.targets.iter().map(|&target| {
                    let mut client = clients[target].clone();
                    let mut request = tonic::Request::new(CancelOrderRequest {
                        order_id: order_id.clone(),
                    });
                    request.set_timeout(CALL_TIMEOUT);
                    async move { client.cancel_order(request).await }
                }))
                .await;
                for cancel in cancels {
                    if let Err(status) = cancel {
                        if status.code() == Code::Internal {
                            problems
                                .push(format!("{order_id}: cancel INTERNAL {}", status.message()));
                        }
                    }
                }
            }
            problems
        }
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

// ---- the invariants -------------------------------------------------------------

struct Databases {
    orders: SqlitePool,
    inventory: SqlitePool,
    payments: SqlitePool,
}

async fn read_only(path: PathBuf) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap_or_else(|error| panic!("open {} read-only: {error}", path.display()))
}

impl Databases {
    async fn open(data: &Path) -> Self {
        Self {
            orders: read_only(data.join("orders.db")).await,
            inventory: read_only(data.join("inventory.db")).await,
            payments: read_only(data.join("payments.db")).await,
        }
    }

    async fn unfinished(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status IN ('PENDING', 'CANCELLING')")
            .fetch_one(&self.orders)
            .await
            .expect("count unfinished orders")
    }

    async fn outcomes(&self) -> BTreeMap<String, i64> {
        sqlx::query("SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
            .fetch_all(&self.orders)
            .await
            .expect("count orders by status")
            .iter()
            .map(|row| (row.get("status"), row.get("n")))
            .collect()
    }

    /// Every invariant over the whole history; the first broken one.
    async fn check(&self) -> Result<(), String> {
        let orders =
            sqlx::query("SELECT order_id, request_id, status, total_cents, payment_id FROM orders")
                .fetch_all(&self.orders)
                .await
                .map_err(|e| e.to_string())?;
        let payments =
            sqlx::query("SELECT payment_id, idempotency_key, amount_cents, status FROM payments")
                .fetch_all(&self.payments)
                .await
                .map_err(|e| e.to_string())?;
        let by_key: HashMap<String, (String, i64, String)> = payments
            .iter()
            .map(|row| {
                (
                    row.get::<String, _>("idempotency_key"),
                    (
                        row.get("payment_id"),
                        row.get("amount_cents"),
                        row.get("status"),
                    ),
                )
            })
            .collect();
        let mut keys_of_orders = std::collections::HashSet::new();
        let mut sold: HashMap<String, i64> = HashMap::new();
        for row in &orders {
            let order_id: String = row.get("order_id");
            let request_id: String = row.get("request_id");
            let status: String = row.get("status");
            let total: i64 = row.get("total_cents");
            let payment_id: String = row.get("payment_id");
            let key = orders::domain::charge_key(&request_id);
            keys_of_orders.insert(key.clone());
            let payment = by_key.get(&key);
            match status.as_str() {
                "CONFIRMED" => {
                    let Some((id, amount, state)) = payment else {
                        return Err(format!("CONFIRMED {order_id} has no payment"));
                    };
                    if id != &payment_id || *amount != total || state != "CAPTURED" {
                        return Err(format!(
                            "CONFIRMED {order_id} (total {total}, payment {payment_id}) has payment {id} {state} of {amount}"
                        ));
                    }
                    let lines =
                        sqlx::query("SELECT sku, quantity FROM order_lines WHERE order_id = $1")
                            .bind(&order_id)
                            .fetch_all(&self.orders)
                            .await
                            .map_err(|e| e.to_string())?;
                    for line in lines {
                        *sold.entry(line.get("sku")).or_default() += line.get::<i64, _>("quantity");
                    }
                }
                "REJECTED" | "CANCELLED" => {
                    if let Some((id, _, state)) = payment {
                        if state == "CAPTURED" {
                            return Err(format!(
                                "{status} {order_id} kept the captured payment {id}"
                            ));
                        }
                    }
                }
                other => return Err(format!("order {order_id} is still {other}")),
            }
        }
        if let Some(key) = by_key.keys().find(|key| !keys_of_orders.contains(*key)) {
            return Err(format!("payment with key {key} belongs to no order"));
        }
        let items = sqlx::query("SELECT sku, available, reserved, committed FROM items")
            .fetch_all(&self.inventory)
            .await
            .map_err(|e| e.to_string())?;
        for row in items {
            let sku: String = row.get("sku");
            let (available, reserved, committed): (i64, i64, i64) = (
                row.get("available"),
                row.get("reserved"),
                row.get("committed"),
            );
            let initial = SKUS
                .iter()
                .find(|(s, _, _)| *s == sku)
                .map(|(_, units, _)| *units);
            if Some(available + reserved + committed) != initial {
                return Err(format!(
                    "{sku}: {available} available + {reserved} reserved + {committed} committed != {initial:?} added"
                ));
            }
            if reserved != 0 {
                return Err(format!("{sku}: {reserved} units still reserved"));
            }
            let expected = sold.get(&sku).copied().unwrap_or(0);
            if committed != expected {
                return Err(format!(
                    "{sku}: {committed} committed but confirmed orders hold {expected}"
                ));
            }
        }
        // request_id is UNIQUE in the schema; callers checked that duplicates got one order.
        Ok(())
    }
}

// ---- the campaign ---------------------------------------------------------------

#[derive(Default)]
struct Figures {
    runs: usize,
    orders: usize,
    faults: BTreeMap<Fault, usize>,
    /// Per run: from the fault healed to every order final.
    recovery_ms: Vec<u64>,
    /// Runs in which some order was still unfinished when the fault healed.
    recovering_runs: usize,
    /// Final statuses of every order of the campaign.
    outcomes: BTreeMap<String, i64>,
}

impl Figures {
    fn percentile(&self, p: f64) -> u64 {
        percentile(&self.recovery_ms, p)
    }

    fn summary(&self, seed: u64, elapsed: Duration) -> String {
        let mut text = format!(
            "fault campaign: seed {seed}, {} runs, {} orders, {:.0} s\n",
            self.runs,
            self.orders,
            elapsed.as_secs_f64()
        );
        text.push_str("  faults drawn:\n");
        for (fault, count) in &self.faults {
            text.push_str(&format!("    {:<55} {count}\n", fault.name()));
        }
        text.push_str(&format!(
            "  runs with orders still unfinished when the fault healed: {}\n",
            self.recovering_runs
        ));
        text.push_str(&format!("  final orders: {:?}\n", self.outcomes));
        text.push_str(&format!(
            "  recovery time, fault healed -> every order final: p50 {} ms, p99 {} ms, max {} ms\n",
            self.percentile(50.0),
            self.percentile(99.0),
            self.recovery_ms.iter().max().copied().unwrap_or(0)
        ));
        text
    }
}

/// The nearest-rank `p`th percentile of `values` (0 when empty).
fn percentile(values: &[u64], p: f64) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    eprintln!(
        "fault campaign: seed {} ({} runs); reproduce with --seed {}",
        args.seed, args.runs, args.seed
    );
    let started = Instant::now();
    let result = runtime.block_on(campaign(&args));
    match result {
        Ok(figures) => {
            let summary = figures.summary(args.seed, started.elapsed());
            eprintln!("{summary}");
            if let Some(path) = &args.report {
                std::fs::write(path, &summary).expect("write the report");
            }
        }
        Err(failure) => {
            eprintln!("FAULT CAMPAIGN FAILED (seed {}): {failure}\nreproduce: cargo test -p orders --test fault_campaign -- --seed {} --runs {}", args.seed, args.seed, args.runs);
            std::process::exit(1);
        }
    }
}

async fn campaign(args: &Args) -> Result<Figures, String> {
    let mut shop = Shop::start().await;
    let databases = Databases::open(shop.data.path()).await;
    let mut figures = Figures::default();
    for run in 0..args.runs {
        let mut rng =
            StdRng::seed_from_u64(args.seed ^ (run as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let fault = FAULTS[rng.random_range(0..FAULTS.len())];
        let planned = plan(&mut rng, args.seed, run, fault);
        figures.orders += planned.len();
        *figures.faults.entry(fault).or_default() += 1;
        let callers = tokio::spawn(callers(shop.clients.clone(), shop.user_id.clone(), planned));

        // The fault, at a random point of the batch's sagas.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await;
        let victim_orders = rng.random_range(0..2);
        match fault {
            Fault::KillOrders => {
                tokio::task::block_in_place(|| shop.kill_and_restart(Victim::Orders(victim_orders)))
            }
            Fault::KillPayments => {
                let victim = Victim::Payments(rng.random_range(0..2));
                tokio::task::block_in_place(|| shop.kill_and_restart(victim))
            }
            Fault::KillInventory => {
                tokio::task::block_in_place(|| shop.kill_and_restart(Victim::Inventory))
            }
            Fault::PaymentsLatency => {
                shop.proxy.set(DELAY);
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
                shop.proxy.set(PASS);
            }
            Fault::LostReply => {
                shop.proxy.set(DROP_REPLIES);
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
                shop.proxy.set(PASS);
            }
            Fault::DuplicateRequests => {}
            Fault::OrdersRestartMidRecovery => {
                tokio::task::block_in_place(|| {
                    shop.kill_and_restart(Victim::Orders(victim_orders))
                });
                // The restarted instance (or the other) is recovering now.
                tokio::time::sleep(Duration::from_millis(
                    rng.random_range(LEASE_MS / 2..LEASE_MS * 3 / 2),
                ))
                .await;
                tokio::task::block_in_place(|| {
                    shop.kill_and_restart(Victim::Orders(victim_orders))
                });
            }
        }
        let healed = Instant::now();
        if databases.unfinished().await > 0 {
            figures.recovering_runs += 1;
        }

        // Settle: callers done and every order final.
        let problems = loop {
            if callers.is_finished() && databases.unfinished().await == 0 {
                break callers.await.map_err(|e| format!("callers: {e}"))?;
            }
            if healed.elapsed() > SETTLE_LIMIT {
                return Err(format!(
                    "run {run} ({}): orders still unfinished {SETTLE_LIMIT:?} after the fault healed",
                    fault.name()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        figures
            .recovery_ms
            .push(healed.elapsed().as_millis() as u64);
        figures.runs += 1;
        if !problems.is_empty() {
            return Err(format!("run {run} ({}): {problems:?}", fault.name()));
        }
        databases
            .check()
            .await
            .map_err(|broken| format!("run {run} ({}): {broken}", fault.name()))?;
        if (run + 1) % 50 == 0 {
            eprintln!("{} runs, {:?}", run + 1, figures.faults);
        }
    }
    figures.outcomes = databases.outcomes().await;
    Ok(figures)
}
