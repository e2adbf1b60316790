//! `mesh-bench events`: what the events path does and costs, measured on
//! real processes and a real broker (docs/EVENTS.md, docs/BENCHMARKS.md):
//!
//! 1. **The outbox's cost on PlaceOrder**: closed-loop PlaceOrder at
//!    saturation against orders with its outbox (`--events on`, relay
//!    publishing to the broker) and orders without (`--events off`), over
//!    the same users/inventory/payments, in `--rounds` interleaved pairs;
//!    the median of the pairs' throughput ratios. Shipping is stopped
//!    during these rounds (its CPU is not the outbox's cost on a shared
//!    2-core machine). Aim: ratio ≥ 0.95 (the outbox slows PlaceOrder by
//!    at most 5 %). Beside it, what survives a loaded machine: CPU µs per
//!    order (user + system time from `/proc`) of both orders processes, the
//!    broker and users/inventory/payments over the "on" and the "off"
//!    rounds, and their ratio (at CPU-bound saturation, throughput on/off is
//!    about CPU per order off/on).
//!
//!    Then `--together` rounds load both shops at the same time (half the
//!    callers each) and compare, within each round, the CPU of an order with
//!    and without the outbox (`together.rs`): both see the same machine at
//!    the same moment, so the machine's swings cancel out of each round's
//!    ratio. Aim: median ≥ 0.95. `--control` runs these rounds with both
//!    shops **without** the outbox: their ratio is then 1.0 but for the
//!    protocol's own bias and noise, the yardstick for any run's result.
//! 2. **Latency at a fixed rate**: `--rate` orders/s (open loop) for
//!    `--seconds`, then per order the time from its commit (the outbox
//!    row's time, written in the order's own write unit) to its shipment's
//!    commit time (`shipments.created_at`): p50, p99, max. Aim: p99 ≤
//!    100 ms at 100 orders/s.
//! 3. **Throughput at saturation**: the broker frozen (SIGSTOP) while
//!    `--backlog` orders are placed, so the outbox holds them all; then it
//!    runs again and the backlog flows relay → broker → shipping; events/s
//!    from the first shipment row to the last.
//!
//! `cargo build --release --workspace && target/release/mesh-bench events
//! --broker redis` (and `--broker rabbitmq`).

mod cpu;
mod measure;
pub(crate) mod shop;
mod together;

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use mesh::proto::{
    inventory::v1::{inventory_client::InventoryClient, AddStockRequest},
    orders::v1::{orders_client::OrdersClient, OrderLine, PlaceOrderRequest},
    users::v1::{users_client::UsersClient, CreateUserRequest},
};
use serde::Serialize;
use tokio::time::Instant;
use tonic::transport::Channel;

use shop::{BrokerKind, EventsShop};

/// The SKU every order buys.
const SKU: &str = "BENCH-1";

/// `mesh-bench events` flags.
#[derive(clap::Args, Debug)]
pub(crate) struct EventsArgs {
    /// The broker.
    #[arg(long, value_enum, default_value_t = BrokerKind::Redis)]
    broker: BrokerKind,
    /// Interleaved on/off pairs for the outbox's cost: an even number, so
    /// that each shop goes first in as many pairs as the other (see
    /// [`even_rounds`]).
    #[arg(long, default_value_t = 6, value_parser = even_rounds)]
    rounds: u32,
    /// Rounds with both shops loaded at the same time (half the callers
    /// each), the outbox's cost measured within each round; 0 skips them.
    #[arg(long, default_value_t = 6)]
    together: u32,
    /// Length of each saturation round.
    #[arg(long, value_parser = crate::load::parse_duration, default_value = "5s")]
    round: Duration,
    /// Concurrent PlaceOrder callers at saturation.
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// Orders per second of the latency phase.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Length of the latency phase.
    #[arg(long, value_parser = crate::load::parse_duration, default_value = "20s")]
    seconds: Duration,
    /// Orders held in the outbox for the saturation phase.
    #[arg(long, default_value_t = 2000)]
    backlog: u32,
    /// Shipping instances (over one SQLite database, as `mesh up` runs two).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
    shipping: u16,
    /// Where the service binaries are (default: beside mesh-bench).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// A control run: both shops start **without** the outbox, so the
    /// together rounds compare two identical shops. Their ratio should be
    /// 1.0; how far each run lands from it is the protocol's own bias and
    /// spread, the least difference a run can show. Runs the together
    /// rounds only.
    #[arg(long)]
    control: bool,
    /// Start the orders without the outbox before the one with it (by
    /// default the one with it starts first).
    #[arg(long)]
    outbox_last: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct EventsReport {
    broker: BrokerKind,
    shipping_instances: u16,
    /// The load average (1 min) when the run ended: the machine's state.
    load_average: f64,
    /// PlaceOrder/s per pair, events on and off.
    rounds: Vec<(f64, f64)>,
    /// Median of on/off per pair.
    outbox_ratio: f64,
    outbox_aim_met: bool,
    /// CPU µs per order over all "on" rounds, by process and in total.
    cpu_on: cpu::CpuPerOrder,
    /// The same over all "off" rounds.
    cpu_off: cpu::CpuPerOrder,
    /// Total CPU per order off / on: the throughput ratio a CPU-bound
    /// machine would show, whatever else runs on it.
    cpu_ratio: f64,
    /// The rounds with both shops loaded together.
    together: Vec<together::TogetherRound>,
    /// Their median cost ratio (CPU per order off / on).
    together_cost_ratio: f64,
    /// Their median ratio of orders placed, on / off.
    together_placed_ratio: f64,
    rate: u32,
    latency_orders: usize,
    latency_p50_ms: u64,
    latency_p99_ms: u64,
    latency_max_ms: u64,
    latency_aim_met: bool,
    backlog: usize,
    events_per_second: f64,
}

/// Runs the three phases against `args.broker`.
pub(crate) async fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let bin = crate::service_binaries(args.bin.as_deref())?;
    let dir = tempfile::Builder::new()
        .prefix("mesh-bench-events-")
        .tempdir()?;
    let mut shop = EventsShop::start(
        args.broker,
        usize::from(args.shipping),
        &bin,
        dir.path(),
        !args.control,
        args.outbox_last,
    )?;
    let user_id = seed(shop.users_addr, shop.inventory_addr).await?;
    let on = OrdersClient::new(channel(shop.orders_on.addr)?);
    let off = OrdersClient::new(channel(shop.orders_off.addr)?);

    // 1. The outbox's cost, shipping stopped.
    shop.stop_shipping();
    let groups = shop.cpu_groups();
    let mut rounds = Vec::new();
    let (mut cpu_on, mut cpu_off) = (cpu::Sample::default(), cpu::Sample::default());
    let (mut orders_on, mut orders_off) = (0, 0);
    for round in 0..args.rounds {
        // Alternate which goes first: neither always gets the warmer machine.
        let on_first = round % 2 == 0;
        let mut pair = [0.0; 2];
        for events_on in [on_first, !on_first] {
            let client = if events_on { &on } else { &off };
            let before = groups.sample();
            let (rate, placed) = saturate(client, &user_id, args.concurrency, args.round).await?;
            let used = groups.sample().since(&before);
            if events_on {
                cpu_on.add(&used);
                orders_on += placed;
                pair[0] = rate;
            } else {
                cpu_off.add(&used);
                orders_off += placed;
                pair[1] = rate;
            }
        }
        rounds.push((pair[0], pair[1]));
    }
    let outbox_ratio = median(rounds.iter().map(|(on, off)| on / off).collect());
    let (cpu_on, cpu_off) = (cpu_on.per_order(orders_on), cpu_off.per_order(orders_off));
    let cpu_ratio = cpu_off.total_us / cpu_on.total_us.max(f64::MIN_POSITIVE);
    let together = together::measure(
        &groups,
        (&on, &off),
        &user_id,
        args.concurrency,
        args.round,
        args.together,
    )
    .await?;
    let together_cost_ratio = median(together.iter().map(|r| r.cost_ratio()).collect());
    let together_placed_ratio = median(together.iter().map(|r| r.placed_ratio()).collect());
    if args.control {
        let report = ControlReport {
            broker: args.broker,
            load_average: load_average(),
            rounds,
            pair_ratio: outbox_ratio,
            cpu_ratio,
            together,
            together_cost_ratio,
            together_placed_ratio,
        };
        crate::print_report(&report, args.json, control_text)?;
        return Ok(ExitCode::SUCCESS);
    }
    shop.start_shipping()?;
    let mut probe = measure::Probe::open(&shop.data).await?;
    probe.wait_drained(Duration::from_secs(300)).await?;

    // 2. Latency at a fixed rate.
    let since = measure::now_ms();
    fixed_rate(&on, &user_id, args.rate, args.seconds).await?;
    probe.wait_drained(Duration::from_secs(120)).await?;
    let mut latencies = probe.latencies_since(since).await?;
    latencies.sort_unstable();
    let at = |sorted: &[u64], q: f64| {
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let (p50, p99, max) = (
        at(&latencies, 0.5),
        at(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0),
    );

    // 3. Throughput at saturation: a backlog in the outbox, then let go.
    shop.freeze_broker();
    let since = measure::now_ms();
    place_many(&on, &user_id, args.backlog, args.concurrency).await?;
    shop.thaw_broker();
    probe.wait_drained(Duration::from_secs(600)).await?;
    let (backlog, events_per_second) = probe.drain_rate_since(since).await?;

    let report = EventsReport {
        broker: args.broker,
        shipping_instances: args.shipping,
        load_average: load_average(),
        outbox_aim_met: outbox_ratio >= 0.95,
        rounds,
        outbox_ratio,
        cpu_ratio,
        cpu_on,
        cpu_off,
        together,
        together_cost_ratio,
        together_placed_ratio,
        rate: args.rate,
        latency_orders: latencies.len(),
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        latency_max_ms: max,
        latency_aim_met: p99 <= 100,
        backlog,
        events_per_second,
    };
    crate::print_report(&report, args.json, text)?;
    drop(shop);
    Ok(ExitCode::SUCCESS)
}

/// What a control run (`--control`: both shops without the outbox)
/// measured.
#[derive(Debug, Serialize)]
struct ControlReport {
    broker: BrokerKind,
    /// The load average (1 min) when the run ended.
    load_average: f64,
    /// PlaceOrder/s per interleaved pair, first shop and second.
    rounds: Vec<(f64, f64)>,
    /// Median of first/second per pair.
    pair_ratio: f64,
    /// Total CPU per order over the pairs, second over first.
    cpu_ratio: f64,
    /// The together rounds, "on" being the first shop (also without).
    together: Vec<together::TogetherRound>,
    /// Their median cost ratio: 1.0 but for the protocol's bias and noise.
    together_cost_ratio: f64,
    /// Their median ratio of orders placed, first shop over second.
    together_placed_ratio: f64,
}

fn control_text(report: &ControlReport) -> String {
    let rounds: Vec<String> = report
        .together
        .iter()
        .map(|round| format!("{:.3}", round.cost_ratio()))
        .collect();
    let pairs: Vec<String> = report
        .rounds
        .iter()
        .map(|(first, second)| format!("{first:.0}/{second:.0}"))
        .collect();
    format!(
        "control run (both shops without the outbox; load average {:.2})\n\
         interleaved pairs: PlaceOrder/s first/second {}; median ratio {:.3}, CPU per order second/first {:.3}\n\
         both shops together: CPU per order second/first per round {}; median {:.3} (1.0 but for the protocol's bias and noise), orders placed first/second median {:.3}\n",
        report.load_average,
        pairs.join(", "),
        report.pair_ratio,
        report.cpu_ratio,
        rounds.join(", "),
        report.together_cost_ratio,
        report.together_placed_ratio
    )
}

fn text(report: &EventsReport) -> String {
    let rounds: Vec<String> = report
        .rounds
        .iter()
        .map(|(on, off)| format!("{on:.0}/{off:.0}"))
        .collect();
    let aim = |met: bool| if met { "aim met" } else { "AIM MISSED" };
    let by_process: Vec<String> = report
        .cpu_on
        .by_process
        .iter()
        .map(|(name, on)| {
            let off = report.cpu_off.by_process.get(name).copied().unwrap_or(0.0);
            format!("{name} {on:.0}/{off:.0}")
        })
        .collect();
    let together: Vec<String> = report
        .together
        .iter()
        .map(|round| format!("{:.3}", round.cost_ratio()))
        .collect();
    let together = if together.is_empty() {
        String::from("not measured")
    } else {
        format!(
            "CPU per order off/on per round {}; median {:.3} ({}: ≥ 0.95), orders placed on/off median {:.3}",
            together.join(", "),
            report.together_cost_ratio,
            aim(report.together_cost_ratio >= 0.95),
            report.together_placed_ratio
        )
    };
    format!(
        "events through {:?}, {} shipping instance(s) (load average {:.2})\n\
         outbox cost: PlaceOrder/s on/off per pair {}; median ratio {:.3} ({}: ≥ 0.95)\n\
         CPU µs per order on/off: total {:.0}/{:.0}, ratio off/on {:.3}; by process {}\n\
         both shops together: {}\n\
         commit → shipment at {} orders/s: {} orders, p50 {} ms, p99 {} ms, max {} ms ({}: p99 ≤ 100 ms)\n\
         saturation: a backlog of {} events drained at {:.0} events/s\n",
        report.broker,
        report.shipping_instances,
        report.load_average,
        rounds.join(", "),
        report.outbox_ratio,
        aim(report.outbox_aim_met),
        report.cpu_on.total_us,
        report.cpu_off.total_us,
        report.cpu_ratio,
        by_process.join(", "),
        together,
        report.rate,
        report.latency_orders,
        report.latency_p50_ms,
        report.latency_p99_ms,
        report.latency_max_ms,
        aim(report.latency_aim_met),
        report.backlog,
        report.events_per_second,
    )
}

/// A lazy plaintext channel to `addr`.
pub(crate) fn channel(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.connect_lazy())
}

/// A user (in users at `users`) and plenty of stock (in inventory at
/// `inventory`); the user's id.
pub(crate) async fn seed(
    users: std::net::SocketAddr,
    inventory: std::net::SocketAddr,
) -> anyhow::Result<String> {
    let user_id = UsersClient::new(channel(users)?)
        .create_user(CreateUserRequest {
            email: "events-bench@example.com".into(),
            display_name: "Events bench".into(),
        })
        .await?
        .into_inner()
        .user_id;
    InventoryClient::new(channel(inventory)?)
        .add_stock(AddStockRequest {
            sku: SKU.into(),
            quantity: 1_000_000_000,
            unit_price_cents: 100,
            currency: "EUR".into(),
        })
        .await?;
    Ok(user_id)
}

fn request(user_id: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_owned(),
        items: vec![OrderLine {
            sku: SKU.into(),
            quantity: 1,
            unit_price_cents: 0,
        }],
        currency: String::new(),
    }
}

/// Closed-loop PlaceOrder for `length`; successful calls per second, and
/// how many.
async fn saturate(
    client: &OrdersClient<Channel>,
    user_id: &str,
    concurrency: u32,
    length: Duration,
) -> anyhow::Result<(f64, u64)> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + length;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (mut client, user_id, done) = (client.clone(), user_id.to_owned(), done.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < end {
                client.place_order(request(&user_id)).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for worker in workers {
        worker.await?.context("PlaceOrder failed")?;
    }
    let placed = done.load(Ordering::Relaxed);
    Ok((placed as f64 / started.elapsed().as_secs_f64(), placed))
}

/// `count` orders, `concurrency` at a time.
pub(crate) async fn place_many(
    client: &OrdersClient<Channel>,
    user_id: &str,
    count: u32,
    concurrency: u32,
) -> anyhow::Result<()> {
    let left = Arc::new(AtomicU64::new(u64::from(count)));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (mut client, user_id, left) = (client.clone(), user_id.to_owned(), left.clone());
        workers.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                client.place_order(request(&user_id)).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for worker in workers {
        worker.await?.context("PlaceOrder failed")?;
    }
    Ok(())
}

/// `rate` PlaceOrder calls per second for `length`, each started on time
/// whatever the earlier ones are doing (open loop).
async fn fixed_rate(
    client: &OrdersClient<Channel>,
    user_id: &str,
    rate: u32,
    length: Duration,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + length;
    let mut calls = Vec::new();
    while Instant::now() < end {
        ticks.tick().await;
        let mut client = client.clone();
        let request = request(user_id);
        calls.push(tokio::spawn(
            async move { client.place_order(request).await },
        ));
    }
    for call in calls {
        call.await?.context("PlaceOrder failed")?;
    }
    Ok(())
}

/// `--rounds`: an even number of pairs (0 skips them). The pairs alternate
/// which shop goes first, and with an odd count one shop goes first once
/// more than the other. That tilts the together rounds that follow:
/// control runs (`--control`, two identical shops) with one pair measured
/// the shop that went first at 0.973–0.998 (median 0.980) of the other,
/// and with none, two or four at 0.991–1.015 (docs/BENCHMARKS.md, "A
/// control run").
fn even_rounds(value: &str) -> Result<u32, String> {
    let rounds: u32 = value
        .parse()
        .map_err(|error| format!("{value:?} is not a number of rounds: {error}"))?;
    if rounds % 2 == 1 {
        return Err(format!(
            "{rounds} is odd: the pairs alternate which shop goes first, so use an even number \
             ({} or {}) to have each go first as often as the other",
            rounds - 1,
            u64::from(rounds) + 1
        ));
    }
    Ok(rounds)
}

/// The median (0 of none).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The 1-minute load average (0 where /proc has none).
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closed_loop_pairs_are_an_even_number() {
        assert_eq!(even_rounds("0"), Ok(0));
        assert_eq!(even_rounds("6"), Ok(6));
        let odd = even_rounds("1").unwrap_err();
        assert!(
            odd.contains("1 is odd") && odd.contains("(0 or 2)"),
            "{odd}"
        );
        assert!(even_rounds("4294967295")
            .unwrap_err()
            .contains("(4294967294 or 4294967296)"));
        assert!(even_rounds("two").unwrap_err().contains("not a number"));
    }
}
