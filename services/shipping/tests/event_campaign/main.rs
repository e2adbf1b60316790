//! The events fault campaign: real orders and shipping processes, a real
//! broker (Redis, then RabbitMQ), real SIGKILLs, in seeded random runs.
//!
//! Each run places a few orders (some rejected, some cancelled) while one
//! fault happens: the relay killed between the commit and the publish, or
//! between the broker's confirmation and the row's removal; the consumer killed
//! between the effect and the acknowledgement; the broker stopped for about
//! a second (frozen by SIGSTOP in most of those runs, killed and started
//! again in every 10th run on Redis, every 25th on RabbitMQ, alternating
//! with restarts of everything); an event published again after the relay
//! published it (taken from its row before the removal); an order's cancel delivered before
//! its confirmation; everything killed and restarted. Then it waits for the
//! shop to settle and checks the invariants of [`check`] over every order so
//! far.
//!
//! `cargo test -p shipping --test event_campaign -- [--runs N] [--seed S]
//! [--broker redis|rabbitmq] [--report FILE]` (also `MESH_EVENT_CAMPAIGN_RUNS`,
//! `MESH_EVENT_CAMPAIGN_SEED`); the suite runs 100 runs per broker.

mod check;
mod shop;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use events::{Broker, EventBroker};
use mesh::proto::orders::v1::{CancelOrderRequest, OrderLine, OrderStatus, PlaceOrderRequest};
use rand::{rngs::StdRng, Rng, SeedableRng};
use shop::{Pause, Shop, SKUS};

/// The faults, one per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    None,
    KillRelayBeforePublish,
    KillRelayAfterPublish,
    KillConsumerBeforeAck,
    BrokerFreeze,
    BrokerRestart,
    DuplicatePublish,
    CancelBeforeConfirm,
    RestartEverything,
}

impl Fault {
    /// The fault of run `run`. Every `restart_every`-th run restarts for
    /// real — the broker alone, or everything, in turn — so that every
    /// campaign of at least that many runs has both; the other runs draw
    /// the cheaper faults at random, the broker's short stops as a freeze
    /// (SIGSTOP, about a second, connections kept open).
    fn pick(rng: &mut StdRng, run: usize, broker: &str) -> Self {
        // A RabbitMQ node takes seconds to start again: fewer real restarts.
        let restart_every = if broker == "redis" { 10 } else { 25 };
        if run % restart_every == restart_every / 2 {
            return if (run / restart_every) % 2 == 0 {
                Self::BrokerRestart
            } else {
                Self::RestartEverything
            };
        }
        let weighted = [
            (Self::None, 18),
            (Self::KillRelayBeforePublish, 12),
            (Self::KillRelayAfterPublish, 12),
            (Self::KillConsumerBeforeAck, 12),
            (Self::BrokerFreeze, 12),
            (Self::DuplicatePublish, 14),
            (Self::CancelBeforeConfirm, 12),
        ];
        let total: u32 = weighted.iter().map(|(_, weight)| weight).sum();
        let mut roll = rng.random_range(0..total);
        for (fault, weight) in weighted {
            if roll < weight {
                return fault;
            }
            roll -= weight;
        }
        Self::None
    }
}

struct Args {
    runs: usize,
    seed: u64,
    brokers: Vec<String>,
    report: Option<PathBuf>,
}

fn args() -> Args {
    let mut runs = std::env::var("MESH_EVENT_CAMPAIGN_RUNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100);
    let mut seed = std::env::var("MESH_EVENT_CAMPAIGN_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let mut brokers = vec!["redis".to_owned(), "rabbitmq".to_owned()];
    let mut report = None;
    let mut args = std::env::args().skip(1);
    // Other flags (e.g. the suite's --test-threads) are not ours: ignored.
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).expect("--seed N"),
            "--broker" => brokers = vec![args.next().expect("--broker redis|rabbitmq")],
            "--report" => report = args.next().map(PathBuf::from),
            _ => {}
        }
    }
    Args {
        runs,
        seed,
        brokers,
        report,
    }
}

/// What one broker's campaign measured.
#[derive(Default)]
struct Figures {
    runs: usize,
    /// fault → (runs, seconds spent in them, settling included).
    faults: std::collections::BTreeMap<String, (usize, f64)>,
    settle_ms: Vec<u64>,
    /// Faults that did not happen: the other instance got there first.
    missed: usize,
    orders: usize,
    events: usize,
    elapsed: Duration,
}

impl Figures {
    fn summary(&mut self, broker: &str, seed: u64) -> String {
        self.settle_ms.sort_unstable();
        let at = |q: f64| {
            self.settle_ms
                .get(((self.settle_ms.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(fault, (count, seconds))| format!("{fault} {count} ({seconds:.1} s)"))
            .collect();
        format!(
            "{broker}: {} runs (seed {seed}) in {:.0} s, {} orders, {} events applied exactly once; \
             time to settle after the last action p50 {} ms, p99 {} ms, max {} ms; faults: {} \
             ({} not reached: the other instance was first)",
            self.runs,
            self.elapsed.as_secs_f64(),
            self.orders,
            self.events,
            at(0.5),
            at(0.99),
            self.settle_ms.last().copied().unwrap_or(0),
            faults.join(", "),
            self.missed
        )
    }
}

fn main() -> ExitCode {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut summaries = Vec::new();
    for broker in &args.brokers {
        println!(
            "events campaign: {} runs against {broker}, seed {}",
            args.runs, args.seed
        );
        let started = Instant::now();
        match runtime.block_on(campaign(broker, &args)) {
            Ok(mut figures) => {
                figures.elapsed = started.elapsed();
                let summary = figures.summary(broker, args.seed);
                println!("{summary}");
                summaries.push(summary);
            }
            Err(failure) => {
                eprintln!(
                    "EVENTS CAMPAIGN FAILED ({broker}, seed {}): {failure}\nreproduce: cargo test -p shipping --test event_campaign -- --broker {broker} --seed {} --runs {}",
                    args.seed, args.seed, args.runs
                );
                println!("\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &args.report {
        std::fs::write(path, summaries.join("\n") + "\n").expect("write the report");
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n",
        args.brokers.len()
    );
    ExitCode::SUCCESS
}

async fn campaign(broker: &str, args: &Args) -> Result<Figures, String> {
    let mut shop = Shop::start(broker).await;
    let client = shop.broker_client();
    let mut figures = Figures::default();
    for run in 0..args.runs {
        let mut rng =
            StdRng::seed_from_u64(args.seed ^ (run as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let fault = Fault::pick(&mut rng, run, broker);
        let began = Instant::now();
        one_run(&mut shop, &client, &mut rng, fault, &mut figures.missed)
            .await
            .map_err(|error| format!("run {run} ({fault:?}): {error}"))?;
        let settle = Instant::now();
        let state = settled(&shop, &client)
            .await
            .map_err(|error| format!("run {run} ({fault:?}): {error}"))?;
        figures.settle_ms.push(settle.elapsed().as_millis() as u64);
        let spent = figures.faults.entry(format!("{fault:?}")).or_default();
        spent.0 += 1;
        spent.1 += began.elapsed().as_secs_f64();
        if let Some(violation) = state.violation() {
            return Err(format!("run {run} ({fault:?}): {violation}"));
        }
        (figures.orders, figures.events) = state.totals();
        figures.runs += 1;
    }
    Ok(figures)
}

/// Waits (bounded) until everything settled; the final state.
async fn settled(shop: &Shop, client: &Broker) -> Result<check::State, String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = check::read(&shop.orders_db(), &shop.shipping_db(), client).await;
        match state {
            Ok(state) if state.settled() => return Ok(state),
            Ok(state) if Instant::now() >= deadline => {
                return Err(format!(
                    "did not settle within 90 s: {}",
                    state
                        .violation()
                        .unwrap_or_else(|| "events still in flight".into())
                ))
            }
            Err(error) if Instant::now() >= deadline => return Err(error),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// An order of 1–3 lines; one in four names a SKU inventory does not know
/// (rejected).
fn order(shop: &Shop, rng: &mut StdRng) -> PlaceOrderRequest {
    let lines = rng.random_range(1..=3);
    let mut items: Vec<OrderLine> = (0..lines)
        .map(|_| OrderLine {
            sku: SKUS[rng.random_range(0..SKUS.len())].to_owned(),
            quantity: rng.random_range(1..=3),
            unit_price_cents: 0,
        })
        .collect();
    if rng.random_bool(0.25) {
        items[0].sku = format!("NOSUCH-{}", rng.random_range(0..1000));
    }
    PlaceOrderRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        user_id: shop.user_id.clone(),
        items,
        currency: String::new(),
    }
}

/// Places an order through orders instance `via`; its id when it was
/// confirmed.
async fn place(
    shop: &Shop,
    via: usize,
    request: PlaceOrderRequest,
) -> Result<Option<String>, String> {
    let mut client = shop.clients[via].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.place_order(request.clone()).await {
            Ok(order) => {
                let order = order.into_inner();
                return Ok(
                    (order.status == OrderStatus::Confirmed as i32).then_some(order.order_id)
                );
            }
            // Rejected (unknown SKU): recorded, with its event.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
                ) =>
            {
                return Ok(None)
            }
            // The instance is restarting, or the saga is still busy: the same
            // request again is the same order.
            Err(status) if Instant::now() < deadline => {
                let _ = status;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(format!("PlaceOrder keeps failing: {status}")),
        }
    }
}

async fn cancel(shop: &Shop, via: usize, order_id: &str) -> Result<(), String> {
    let mut client = shop.clients[via].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .cancel_order(CancelOrderRequest {
                order_id: order_id.to_owned(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(status) if Instant::now() < deadline => {
                let _ = status;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(format!("CancelOrder keeps failing: {status}")),
        }
    }
}

/// Places 1–3 orders through either instance and cancels some of the
/// confirmed ones.
async fn some_orders(shop: &Shop, rng: &mut StdRng) -> Result<(), String> {
    for _ in 0..rng.random_range(1..=3) {
        let via = rng.random_range(0..2);
        let request = order(shop, rng);
        if let Some(order_id) = place(shop, via, request).await? {
            if rng.random_bool(0.4) {
                cancel(shop, rng.random_range(0..2), &order_id).await?;
            }
        }
    }
    Ok(())
}

/// A valid order (never rejected).
fn valid_order(shop: &Shop, rng: &mut StdRng) -> PlaceOrderRequest {
    let mut request = order(shop, rng);
    request.items.truncate(1);
    request.items[0].sku = SKUS[0].to_owned();
    request
}

/// Waits (bounded) until the victim's log shows `pause`'s marker: `true`.
/// `false` when the other instance got there first (the other relay
/// published the order's event, or the other consumer applied it): the
/// fault did not happen in this run, which is counted.
async fn wait_paused(
    shop: &Shop,
    log: impl Fn() -> String,
    pause: Pause,
    order_id: &str,
) -> Result<bool, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if log().contains(pause.marker()) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Err(format!("never reached the pause {pause:?}"));
        }
        if handled_elsewhere(shop, pause, order_id).await? {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the step the victim was to pause in was done by the other
/// instance.
async fn handled_elsewhere(shop: &Shop, pause: Pause, order_id: &str) -> Result<bool, String> {
    let (url, sql) = match pause {
        Pause::BeforePublish | Pause::AfterPublish => (
            shop.orders_db(),
            // Its event was recorded and is no longer pending: published
            // (a published event leaves the outbox).
            "SELECT COUNT(*) FROM orders WHERE order_id = $1 AND event_sequence > 0 \
             AND NOT EXISTS (SELECT 1 FROM outbox WHERE order_id = $1 AND published_at_unix_ms = 0)",
        ),
        Pause::BeforeAck => (
            shop.shipping_db(),
            "SELECT COUNT(*) FROM inbox WHERE order_id = $1 AND state = 'APPLIED'",
        ),
    };
    let pool = open(&url).await?;
    let count: i64 = sqlx::query_scalar(sql)
        .bind(order_id)
        .fetch_one(&pool)
        .await
        .map_err(|error| error.to_string())?;
    pool.close().await;
    Ok(count > 0)
}

/// Restarts orders[1] with its relay pausing at `pause`, places a valid
/// order on it and waits for the pause: the order, and whether the relay
/// reached the pause (not when the other instance was first).
async fn paused_order(
    shop: &mut Shop,
    rng: &mut StdRng,
    pause: Pause,
) -> Result<(String, bool), String> {
    shop.restart_orders(1, Some(pause));
    let request = valid_order(shop, rng);
    let order_id = place(shop, 1, request)
        .await?
        .ok_or("a valid order was not confirmed")?;
    let orders = &shop.orders[1];
    let paused = wait_paused(shop, || orders.child.log(), pause, &order_id).await?;
    Ok((order_id, paused))
}

async fn one_run(
    shop: &mut Shop,
    client: &Broker,
    rng: &mut StdRng,
    fault: Fault,
    missed: &mut usize,
) -> Result<(), String> {
    match fault {
        Fault::None => some_orders(shop, rng).await?,
        Fault::KillRelayBeforePublish | Fault::KillRelayAfterPublish => {
            let pause = if fault == Fault::KillRelayBeforePublish {
                Pause::BeforePublish
            } else {
                Pause::AfterPublish
            };
            if !paused_order(shop, rng, pause).await?.1 {
                *missed += 1;
            }
            shop.restart_orders(1, None);
            some_orders(shop, rng).await?;
        }
        Fault::KillConsumerBeforeAck => {
            // The victim is the group's only consumer until it is killed.
            shop.kill_shipping(0);
            shop.restart_shipping(1, Some(Pause::BeforeAck));
            let request = valid_order(shop, rng);
            let order_id = place(shop, 0, request)
                .await?
                .ok_or("a valid order was not confirmed")?;
            let shipping = &shop.shipping[1];
            if !wait_paused(shop, || shipping.child.log(), Pause::BeforeAck, &order_id).await? {
                *missed += 1;
            }
            shop.restart_shipping(1, None);
            shop.restart_shipping(0, None);
            some_orders(shop, rng).await?;
        }
        Fault::BrokerFreeze | Fault::BrokerRestart => {
            some_orders(shop, rng).await?;
            if fault == Fault::BrokerFreeze {
                shop.broker.freeze();
            } else {
                shop.broker.kill();
            }
            // Orders are placed while it is down: the outbox keeps them.
            let down = Instant::now();
            some_orders(shop, rng).await?;
            let rest =
                Duration::from_millis(rng.random_range(800..1200)).saturating_sub(down.elapsed());
            tokio::time::sleep(rest).await;
            if fault == Fault::BrokerFreeze {
                shop.broker.thaw();
            } else {
                shop.broker.resume();
            }
        }
        Fault::DuplicatePublish => {
            some_orders(shop, rng).await?;
            // An event the relay already published, published again. A
            // published event leaves the outbox, so the copy is taken in
            // the moment between the broker's confirmation and the removal
            // (orders[1]'s relay paused there); the paused relay is then
            // killed, and its lease's end sends the event out a third time.
            let (order_id, paused) = paused_order(shop, rng, Pause::AfterPublish).await?;
            if paused {
                let event = outbox_event(shop, &order_id, 1).await?;
                client
                    .publish("orders", &event)
                    .await
                    .map_err(|error| error.to_string())?;
            } else {
                *missed += 1;
            }
            shop.restart_orders(1, None);
        }
        Fault::CancelBeforeConfirm => {
            // orders[1]'s relay holds the confirmation (paused before its
            // publish); the campaign delivers the cancel first.
            let (order_id, paused) = paused_order(shop, rng, Pause::BeforePublish).await?;
            cancel(shop, 1, &order_id).await?;
            if paused {
                let cancel_event = outbox_event(shop, &order_id, 2).await?;
                client
                    .publish("orders", &cancel_event)
                    .await
                    .map_err(|error| error.to_string())?;
                // Let the consumer keep it waiting, then release the confirmation.
                tokio::time::sleep(Duration::from_millis(200)).await;
            } else {
                *missed += 1;
            }
            shop.restart_orders(1, None);
        }
        Fault::RestartEverything => {
            some_orders(shop, rng).await?;
            for index in 0..2 {
                shop.orders[index].child.kill();
                shop.kill_shipping(index);
            }
            shop.broker.kill();
            shop.broker.resume();
            for index in 0..2 {
                shop.restart_orders(index, None);
                shop.restart_shipping(index, None);
            }
            some_orders(shop, rng).await?;
        }
    }
    Ok(())
}

/// The event `sequence` of `order_id`, as recorded in orders' outbox.
async fn outbox_event(shop: &Shop, order_id: &str, sequence: i64) -> Result<events::Event, String> {
    let pool = open(&shop.orders_db()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row: Option<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT event_id, event_type, payload_hex, traceparent, created_at_unix_ms FROM outbox WHERE order_id = $1 AND sequence = $2",
        )
        .bind(order_id)
        .bind(sequence)
        .fetch_optional(&pool)
        .await
        .map_err(|error| error.to_string())?;
        if let Some((event_id, event_type, payload, traceparent, created_at)) = row {
            let body = events::text_body::decode(&payload).ok_or("outbox payload is not hex")?;
            return Ok(events::Event::protobuf(
                event_id,
                "/mesh/orders",
                event_type,
                order_id,
                created_at,
                body,
            )
            .with_trace(Some(traceparent).filter(|text| !text.is_empty()), None));
        }
        if Instant::now() >= deadline {
            return Err(format!("no outbox row {order_id} #{sequence}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn open(url: &str) -> Result<sqlx::AnyPool, String> {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|error| error.to_string())
}
