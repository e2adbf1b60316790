//! The outbox's cost with both shops loaded **at the same time**: each
//! round runs closed-loop PlaceOrder against orders with its outbox and
//! orders without it together (half the callers each), so both see the
//! same machine — the same frequency, the same neighbours, the same
//! moment — and what the interleaved rounds cannot separate from the
//! machine's swings (their pairs move by ±20 % on a shared VM) cancels out
//! of each round's comparison.
//!
//! Per round, from `/proc`: the CPU of each orders process per order it
//! placed, the broker's per order with events (all of it: it serves only
//! those), and users', inventory's and payments' per order of either kind
//! (they do the same work for both). An order's cost is that shared part
//! plus its own orders process (plus the broker for an order with events);
//! the round's ratio is the cost without the outbox over the cost with it.

use std::time::Duration;

use mesh::proto::orders::v1::orders_client::OrdersClient;
use serde::Serialize;
use tonic::transport::Channel;

use super::cpu::{Groups, Sample};

/// The groups whose CPU is shared by both kinds of order.
const SHARED: [&str; 3] = ["users", "inventory", "payments"];

/// One round of both shops together.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TogetherRound {
    /// Orders placed with the outbox on, and off.
    pub(crate) placed: (u64, u64),
    /// CPU µs of one order with the outbox on, and off.
    pub(crate) cost_us: (f64, f64),
}

impl TogetherRound {
    /// What `used` (CPU over the round) and the orders placed give.
    pub(crate) fn from_sample(used: &Sample, placed_on: u64, placed_off: u64) -> Self {
        let us = |label: &str| used.used(label).as_secs_f64() * 1e6;
        let per = |total: f64, orders: u64| total / orders.max(1) as f64;
        let shared = per(
            SHARED.iter().map(|label| us(label)).sum(),
            placed_on + placed_off,
        );
        let on = shared + per(us("orders (events on)") + us("broker"), placed_on);
        let off = shared + per(us("orders (events off)"), placed_off);
        Self {
            placed: (placed_on, placed_off),
            cost_us: (on, off),
        }
    }

    /// Cost without the outbox over cost with it (1.0: the outbox is free).
    pub(crate) fn cost_ratio(&self) -> f64 {
        self.cost_us.1 / self.cost_us.0.max(f64::MIN_POSITIVE)
    }

    /// Orders placed with the outbox over orders placed without.
    pub(crate) fn placed_ratio(&self) -> f64 {
        self.placed.0 as f64 / self.placed.1.max(1) as f64
    }
}

/// `rounds` rounds of `length`, `concurrency` callers split between `on`
/// and `off`.
pub(crate) async fn measure(
    groups: &Groups,
    (on, off): (&OrdersClient<Channel>, &OrdersClient<Channel>),
    user_id: &str,
    concurrency: u32,
    length: Duration,
    rounds: u32,
) -> anyhow::Result<Vec<TogetherRound>> {
    let half = (concurrency / 2).max(1);
    let mut measured = Vec::new();
    for round in 0..rounds {
        // Alternate whose callers start first: neither shop always gets
        // the head start.
        let on_first = round % 2 == 0;
        let before = groups.sample();
        let (with, without) = if on_first {
            tokio::join!(
                super::saturate(on, user_id, half, length),
                super::saturate(off, user_id, half, length)
            )
        } else {
            let (without, with) = tokio::join!(
                super::saturate(off, user_id, half, length),
                super::saturate(on, user_id, half, length)
            );
            (with, without)
        };
        let used = groups.sample().since(&before);
        measured.push(TogetherRound::from_sample(&used, with?.1, without?.1));
    }
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(used_ms: &[(&'static str, u64)]) -> Sample {
        Sample::of(
            used_ms
                .iter()
                .map(|(label, ms)| (*label, Duration::from_millis(*ms))),
        )
    }

    #[test]
    fn an_orders_cost_is_the_shared_part_plus_its_own_process_and_the_broker_with_events() {
        // 1,000 orders each way; the shared services 3 s in all (1.5 ms an
        // order), orders 1.2 s with events and 1 s without, the broker 0.1 s.
        let used = sample(&[
            ("users", 500),
            ("inventory", 1500),
            ("payments", 1000),
            ("orders (events on)", 1200),
            ("orders (events off)", 1000),
            ("broker", 100),
        ]);
        let round = TogetherRound::from_sample(&used, 1000, 1000);
        assert_eq!(round.cost_us, (1500.0 + 1200.0 + 100.0, 1500.0 + 1000.0));
        assert!((round.cost_ratio() - 2500.0 / 2800.0).abs() < 1e-9);
        assert_eq!(round.placed_ratio(), 1.0);
    }

    #[test]
    fn each_orders_process_is_divided_by_its_own_orders() {
        let used = sample(&[("orders (events on)", 900), ("orders (events off)", 1000)]);
        let round = TogetherRound::from_sample(&used, 900, 1000);
        assert_eq!(round.cost_us, (1000.0, 1000.0));
        assert_eq!(round.cost_ratio(), 1.0);
        assert_eq!(round.placed_ratio(), 0.9);
    }
}
