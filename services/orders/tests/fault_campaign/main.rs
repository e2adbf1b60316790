//! The saga's fault campaign: seeded randomized runs against real processes
//! (a Consul agent, users, inventory, two payments and two orders instances
//! sharing their databases), each a batch of orders with one fault:
//!
//! - SIGKILL of an orders, payments or inventory instance at a random point
//!   (then restarted on the same port and data);
//! - payments latency beyond orders' per-call timeout, and a lost reply (the
//!   server commits, the connection dies before the answer: UNAVAILABLE),
//!   both injected by a TCP proxy between orders B and payments;
//! - the same PlaceOrder and CancelOrder sent to both orders instances at once;
//! - an orders instance killed, restarted, and killed again mid-recovery;
//! - a burst of 20–32 orders on both instances;
//! - a process paused (SIGSTOP, then SIGCONT) longer than the lease: an
//!   orders instance (another takes its orders over; the stale runs' calls
//!   land late), or inventory (reservations expire meanwhile; Commits race
//!   the expiry sweep);
//! - orders B's requests and replies (payments and inventory) delayed past
//!   the lease;
//! - orders' database wiped between runs (both instances restarted on an
//!   empty one) and the previous run's requests sent again.
//!
//! Every batch may hold large orders (40–100 lines), half of them naming
//! long unknown SKUs; reservations live 1 s (orders' `--reservation-ttl`),
//! so the expiry paths run too. After each run, once the fault is healed,
//! the campaign waits until every order is final and checks the invariants
//! on the databases, over every epoch of orders' database: every order
//! final; stock conserved (initial = available + reserved + committed,
//! reserved = 0, committed = what confirmed orders hold); a CONFIRMED order
//! has exactly one CAPTURED payment of its total; a REJECTED or CANCELLED
//! order keeps no money; no payment without an order; no two orders share a
//! charge key; one order per request_id per epoch; no answer INTERNAL. A
//! failure prints the seed and the run.
//!
//! Hardening finding 7: the campaign used to send small orders with one
//! short fault each and could not have found findings 1–4 (long unknown SKUs,
//! starved recovery, a Commit racing the expiry, keys colliding after a lost
//! database); the large orders, short TTLs, pauses, late deliveries and the
//! wiped database are what reach those paths.
//!
//! `cargo test -p orders --test fault_campaign` runs 200 runs (the suite);
//! `-- --runs 1000 [--seed N] [--report FILE]` (or MESH_CAMPAIGN_RUNS,
//! MESH_CAMPAIGN_SEED) runs more and writes the figures of docs/SAGA.md.

mod faults;
mod invariants;
mod plan;
mod proxy;
mod shop;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use faults::Fault;
use invariants::Databases;
use plan::{callers, plan, Planned};
use rand::{rngs::StdRng, Rng, SeedableRng};
use shop::{Shop, Victim};

/// Orders' timing in the campaign: short, so a run is short.
pub const UPSTREAM_TIMEOUT_MS: u64 = 250;
pub const LEASE_MS: u64 = 800;
pub const RECOVERY_INTERVAL_MS: u64 = 100;
/// How long a reservation holds its stock (orders asks for it): short, so
/// that faults outlive some reservations.
pub const RESERVATION_TTL_MS: u64 = 1000;
/// How often inventory releases expired reservations.
pub const SWEEP_MS: u64 = 100;
/// How long a caller waits for one PlaceOrder/CancelOrder.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// The most a run may take to settle once its fault is healed.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// payments declines charges above this.
pub const DECLINE_OVER_CENTS: i64 = 100_000;

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

// ---- the figures --------------------------------------------------------------

#[derive(Default)]
struct Figures {
    runs: usize,
    orders: usize,
    /// Orders of 40 lines or more, and those naming unknown SKUs.
    large_orders: usize,
    unknown_sku_orders: usize,
    /// Per fault: runs, and their total wall time.
    faults: BTreeMap<Fault, (usize, Duration)>,
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
            "fault campaign: seed {seed}, {} runs, {} orders ({} of 40+ lines, {} naming unknown SKUs), {:.0} s\n",
            self.runs,
            self.orders,
            self.large_orders,
            self.unknown_sku_orders,
            elapsed.as_secs_f64()
        );
        text.push_str("  faults drawn (runs, mean run time):\n");
        for (fault, (count, time)) in &self.faults {
            text.push_str(&format!(
                "    {:<55} {count:>4} {:>6.2} s\n",
                fault.name(),
                time.as_secs_f64() / (*count).max(1) as f64
            ));
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

// ---- the campaign ---------------------------------------------------------------

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
    let mut databases = Databases::open(shop.data.path()).await;
    let mut figures = Figures::default();
    let mut previous: Vec<Planned> = Vec::new();
    for run in 0..args.runs {
        let run_started = Instant::now();
        let mut rng =
            StdRng::seed_from_u64(args.seed ^ (run as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let fault = Fault::draw(&mut rng);
        if fault == Fault::WipedOrdersDb {
            let archived = tokio::task::block_in_place(|| shop.wipe_orders_database());
            databases.wiped(&archived).await;
        }
        let planned = plan(&mut rng, args.seed, run, fault, &previous);
        figures.orders += planned.len();
        figures.large_orders += planned.iter().filter(|o| o.lines.len() >= 40).count();
        figures.unknown_sku_orders += planned
            .iter()
            .filter(|o| o.lines.iter().any(|(sku, _)| sku.starts_with("GHOST-")))
            .count();
        previous = planned.clone();
        let callers = tokio::spawn(callers(shop.clients.clone(), shop.user_id.clone(), planned));

        // The fault, at a random point of the batch's sagas.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await;
        apply(&mut shop, fault, &mut rng).await;
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
        let entry = figures.faults.entry(fault).or_default();
        entry.0 += 1;
        entry.1 += run_started.elapsed();
        if (run + 1) % 50 == 0 {
            eprintln!("{} runs", run + 1);
        }
    }
    figures.outcomes = databases.outcomes().await;
    Ok(figures)
}

/// Applies `fault` and heals it.
async fn apply(shop: &mut Shop, fault: Fault, rng: &mut StdRng) {
    let victim_orders = rng.random_range(0..2);
    // Past the lease: long enough for another run to take an order over.
    let past_the_lease = Duration::from_millis(LEASE_MS + rng.random_range(50..300));
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
            shop.payments_proxy
                .delay_replies(Duration::from_millis(UPSTREAM_TIMEOUT_MS * 2));
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..600))).await;
            shop.payments_proxy.pass();
        }
        Fault::LostReply => {
            shop.payments_proxy.drop_replies();
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
            shop.payments_proxy.pass();
        }
        Fault::DuplicateRequests | Fault::Burst | Fault::WipedOrdersDb => {}
        Fault::OrdersRestartMidRecovery => {
            tokio::task::block_in_place(|| shop.kill_and_restart(Victim::Orders(victim_orders)));
            // The restarted instance (or the other) is recovering now.
            tokio::time::sleep(Duration::from_millis(
                rng.random_range(LEASE_MS / 2..LEASE_MS * 3 / 2),
            ))
            .await;
            tokio::task::block_in_place(|| shop.kill_and_restart(Victim::Orders(victim_orders)));
        }
        Fault::PauseOrders => {
            shop.pause(Victim::Orders(victim_orders), past_the_lease)
                .await
        }
        Fault::PauseInventory => shop.pause(Victim::Inventory, past_the_lease).await,
        Fault::PastTheLease => {
            let late = Duration::from_millis(LEASE_MS + 200);
            for proxy in [&shop.payments_proxy, &shop.inventory_proxy] {
                proxy.delay_requests(late);
                proxy.delay_replies(late);
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..500))).await;
            shop.payments_proxy.pass();
            shop.inventory_proxy.pass();
        }
    }
}
