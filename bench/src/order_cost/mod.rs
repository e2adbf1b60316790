//! `mesh-bench order-cost`: what one PlaceOrder costs in CPU, per service.
//!
//! Starts users, inventory, payments and orders (release binaries, no
//! Consul, plaintext on loopback, SQLite with durable commits, events off:
//! the saga's own cost) from `--bin`, and with `--baseline DIR` a second
//! such shop from other binaries (e.g. main's, copied before a change).
//! Each round places `--orders` orders closed-loop at `--concurrency` in
//! flight through each shop in turn (the order alternating between rounds,
//! so neither always gets the warmer machine), reading every service
//! process's user + system CPU time from `/proc` before and after. The
//! report gives, per shop, the median over the rounds of each service's
//! CPU µs per order, their sum, orders/s, and the context switches per
//! order summed over the services (each service's in the JSON report: the
//! thread hand-offs that most of an order's CPU goes to), and the share of
//! that CPU the kernel spent on the services' behalf (system calls, thread
//! wake-ups and switches, syncs); CPU time counts only each
//! process's own work, so it holds on a loaded machine better than a rate
//! (the load average at the start and end of the run is in the report).
//!
//! `cargo build --release --workspace && target/release/mesh-bench
//! order-cost --baseline /path/to/main/release`.

mod shop;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use mesh::proto::orders::v1::orders_client::OrdersClient;
use serde::Serialize;

use crate::{
    cpu::CpuTimes,
    events::{channel, load_average, median, place_many, seed},
};
use shop::{OrderShop, SERVICES};

/// `mesh-bench order-cost` flags.
#[derive(clap::Args, Debug)]
pub(crate) struct OrderCostArgs {
    /// Where the service binaries are (default: beside mesh-bench).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Other binaries to measure in the same run, interleaved (the "before").
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Measured rounds per shop.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Orders per round.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    orders: u32,
    /// Orders placed before the first round (connections, caches, pages).
    #[arg(long, default_value_t = 200)]
    warmup: u32,
    /// PlaceOrder calls in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One shop's figures.
#[derive(Debug, Serialize)]
struct ShopReport {
    /// "measured" (`--bin`) or "baseline".
    label: &'static str,
    bin: String,
    /// Per round: CPU µs per order of each service, in [`SERVICES`] order.
    rounds: Vec<[f64; 4]>,
    /// Per round: orders/s.
    rates: Vec<f64>,
    /// Per round: context switches per order of each service, in
    /// [`SERVICES`] order.
    switch_rounds: Vec<[f64; 4]>,
    /// Median over the rounds, per service.
    median_switches_per_order: [f64; 4],
    /// The sum of those medians.
    total_switches_per_order: f64,
    /// Median over the rounds, per service.
    median_us_per_order: [f64; 4],
    /// The sum of the medians.
    total_us_per_order: f64,
    /// Median orders/s (closed loop, so it also depends on the machine's load).
    median_orders_per_second: f64,
    /// Per round: the services' system CPU over their user + system CPU.
    kernel_shares: Vec<f64>,
    /// Median of those.
    median_kernel_share: f64,
}

/// What the run measured.
#[derive(Debug, Serialize)]
struct OrderCostReport {
    services: [&'static str; 4],
    orders_per_round: u32,
    concurrency: u32,
    /// The 1-minute load average at the start and at the end.
    load_average_start: f64,
    load_average_end: f64,
    shops: Vec<ShopReport>,
}

/// Starts the shop(s), then measures `args.rounds` rounds in each.
pub(crate) async fn run(args: OrderCostArgs) -> anyhow::Result<ExitCode> {
    let bin = crate::service_binaries(args.bin.as_deref())?;
    let dir = tempfile::Builder::new()
        .prefix("mesh-bench-order-cost-")
        .tempdir()?;
    let load_average_start = load_average();
    let mut shops = vec![("measured", OrderShop::start(&bin, &dir.path().join("a"))?)];
    if let Some(baseline) = &args.baseline {
        shops.push((
            "baseline",
            OrderShop::start(baseline, &dir.path().join("b"))?,
        ));
    }
    let mut clients = Vec::new();
    for (_, shop) in &shops {
        let user_id = seed(shop.users_addr(), shop.inventory_addr()).await?;
        let client = OrdersClient::new(channel(shop.orders_addr())?);
        place_many(&client, &user_id, args.warmup, args.concurrency).await?;
        clients.push((client, user_id));
    }
    let mut measured: Vec<Measured> = (0..shops.len()).map(|_| Measured::default()).collect();
    for round in 0..args.rounds as usize {
        for turn in 0..shops.len() {
            // Alternate which shop goes first.
            let index = (turn + round) % shops.len();
            let (client, user_id) = &clients[index];
            let shop = &shops[index].1;
            let (before, switches_before) = (shop.cpu_times()?, shop.context_switches()?);
            let started = Instant::now();
            place_many(client, user_id, args.orders, args.concurrency).await?;
            let elapsed = started.elapsed().as_secs_f64();
            let (after, switches_after) = (shop.cpu_times()?, shop.context_switches()?);
            let orders = f64::from(args.orders);
            let round = &mut measured[index];
            round.cpu.push(std::array::from_fn(|i| {
                (after[i].total() - before[i].total()) * 1e6 / orders
            }));
            round.kernel_shares.push(kernel_share(&before, &after));
            round.switches.push(std::array::from_fn(|i| {
                switches_after[i].saturating_sub(switches_before[i]) as f64 / orders
            }));
            round.rates.push(orders / elapsed);
        }
    }
    let reports = shops
        .iter()
        .zip(measured)
        .map(|((label, shop), measured)| {
            let median_us_per_order = medians(&measured.cpu);
            let median_switches_per_order = medians(&measured.switches);
            ShopReport {
                label,
                bin: shop.bin().display().to_string(),
                total_us_per_order: median_us_per_order.iter().sum(),
                median_us_per_order,
                median_orders_per_second: median(measured.rates.clone()),
                median_kernel_share: median(measured.kernel_shares.clone()),
                kernel_shares: measured.kernel_shares,
                rounds: measured.cpu,
                rates: measured.rates,
                total_switches_per_order: median_switches_per_order.iter().sum(),
                median_switches_per_order,
                switch_rounds: measured.switches,
            }
        })
        .collect();
    let report = OrderCostReport {
        services: SERVICES,
        orders_per_round: args.orders,
        concurrency: args.concurrency,
        load_average_start,
        load_average_end: load_average(),
        shops: reports,
    };
    crate::print_report(&report, args.json, text)?;
    drop(shops);
    Ok(ExitCode::SUCCESS)
}

/// One shop's rounds: per service CPU µs and context switches per order,
/// and orders/s.
#[derive(Debug, Default)]
struct Measured {
    cpu: Vec<[f64; 4]>,
    switches: Vec<[f64; 4]>,
    rates: Vec<f64>,
    kernel_shares: Vec<f64>,
}

/// The services' system CPU between `before` and `after` over their user +
/// system CPU (0 when they used none).
fn kernel_share(before: &[CpuTimes; 4], after: &[CpuTimes; 4]) -> f64 {
    let (mut system, mut total) = (0.0, 0.0);
    for (before, after) in before.iter().zip(after) {
        system += after.system - before.system;
        total += after.total() - before.total();
    }
    if total > 0.0 {
        system / total
    } else {
        0.0
    }
}

/// Each service's median over `rounds`.
fn medians(rounds: &[[f64; 4]]) -> [f64; 4] {
    std::array::from_fn(|i| median(rounds.iter().map(|round| round[i]).collect()))
}

fn text(report: &OrderCostReport) -> String {
    let mut out = format!(
        "CPU per PlaceOrder, {} orders a round at {} in flight (load average {:.2} → {:.2})\n\
         {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        report.orders_per_round,
        report.concurrency,
        report.load_average_start,
        report.load_average_end,
        "shop",
        "users",
        "inventory",
        "payments",
        "orders",
        "total µs",
        "orders/s",
        "switches",
        "kernel %",
    );
    for shop in &report.shops {
        let [users, inventory, payments, orders] = shop.median_us_per_order;
        out.push_str(&format!(
            "{:<10} {users:>9.0} {inventory:>9.0} {payments:>9.0} {orders:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}   ({})\n",
            shop.label,
            shop.total_us_per_order,
            shop.median_orders_per_second,
            shop.total_switches_per_order,
            shop.median_kernel_share * 100.0,
            shop.bin
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(user: f64, system: f64) -> CpuTimes {
        CpuTimes { user, system }
    }

    #[test]
    fn the_kernel_share_is_the_services_system_time_over_their_whole_time() {
        let before = [times(1.0, 1.0); 4];
        let after = [
            times(2.0, 1.5),
            times(1.0, 1.0),
            times(1.5, 2.0),
            times(4.0, 2.5),
        ];
        // System: 0.5 + 0 + 1.0 + 1.5 = 3.0 of 1.5 + 0 + 1.5 + 4.5 = 7.5.
        assert!((kernel_share(&before, &after) - 0.4).abs() < 1e-9);
        assert_eq!(kernel_share(&before, &before), 0.0);
    }
}
