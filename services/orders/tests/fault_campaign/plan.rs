//! What a run sends: a batch of orders (random SKUs; some declined, some out
//! of stock, some of up to 100 lines, some naming long unknown SKUs), then
//! CancelOrder for some of the confirmed ones; and the callers that send it.

use mesh::proto::orders::v1::{
    orders_client::OrdersClient, CancelOrderRequest, OrderLine, OrderStatus, PlaceOrderRequest,
};
use rand::{rngs::StdRng, seq::SliceRandom, Rng};
use tonic::{transport::Channel, Code};

use crate::{faults::Fault, CALL_TIMEOUT};

/// The SKUs every order draws from: (sku, units, unit price). SCARCE runs
/// out; LUX × 2 is declined.
pub const SKUS: [(&str, i64, i64); 4] = [
    ("APPLE", 1_000_000, 120),
    ("PEAR", 1_000_000, 75),
    ("LUX", 1_000_000, 60_000),
    ("SCARCE", 40, 500),
];
/// How many `BULK-nn` SKUs the large orders draw from, their units and price.
pub const BULK_SKUS: usize = 100;
pub const BULK_UNITS: i64 = 1_000_000;
pub const BULK_PRICE: i64 = 10;
/// The chance that an order is a large one (40 to 100 lines).
const LARGE_ORDERS: f64 = 0.08;

pub fn bulk_sku(index: usize) -> String {
    format!("BULK-{index:02}")
}

/// The units every SKU was stocked with.
pub fn initial_units(sku: &str) -> Option<i64> {
    SKUS.iter()
        .find(|(name, _, _)| *name == sku)
        .map(|(_, units, _)| *units)
        .or_else(|| sku.starts_with("BULK-").then_some(BULK_UNITS))
}

/// One order of a run.
#[derive(Debug, Clone)]
pub struct Planned {
    pub request_id: String,
    pub lines: Vec<(String, i64)>,
    /// Which orders instances receive it (two: a concurrent duplicate).
    pub targets: Vec<usize>,
    pub cancel: bool,
}

/// The batch of run `run`. After a wiped database, `earlier` (the previous
/// run's orders) are sent again, with their request ids.
pub fn plan(
    rng: &mut StdRng,
    seed: u64,
    run: usize,
    fault: Fault,
    earlier: &[Planned],
) -> Vec<Planned> {
    let count = match fault {
        Fault::Burst => rng.random_range(20..=32),
        _ => rng.random_range(2..=4),
    };
    let mut planned: Vec<Planned> = (0..count)
        .map(|k| {
            let lines = if rng.random_bool(LARGE_ORDERS) {
                large_lines(rng, &format!("{seed:x}-{run}-{k}"))
            } else {
                small_lines(rng)
            };
            Planned {
                request_id: format!("c{seed:x}-{run}-{k}"),
                lines,
                targets: targets(rng, fault),
                cancel: rng.random_bool(0.35),
            }
        })
        .collect();
    if fault == Fault::WipedOrdersDb {
        // The same requests again, as a caller resends them after a timeout.
        planned.extend(earlier.iter().take(3).map(|order| Planned {
            targets: targets(rng, fault),
            ..order.clone()
        }));
    }
    planned
}

fn targets(rng: &mut StdRng, fault: Fault) -> Vec<usize> {
    match fault {
        Fault::DuplicateRequests => vec![0, 1],
        Fault::PaymentsLatency | Fault::LostReply | Fault::PastTheLease => vec![1],
        _ => vec![rng.random_range(0..2)],
    }
}

fn small_lines(rng: &mut StdRng) -> Vec<(String, i64)> {
    let mut lines = Vec::new();
    for (sku, _, _) in SKUS {
        if rng.random_bool(0.4) {
            let quantity = if sku == "LUX" {
                rng.random_range(1..=2)
            } else {
                rng.random_range(1..=3)
            };
            lines.push((sku.to_owned(), quantity));
        }
    }
    if lines.is_empty() {
        lines.push(("APPLE".to_owned(), 1));
    }
    lines
}

/// 40 to 100 distinct BULK SKUs; half of these orders name some long
/// (64-character) SKUs nobody stocks instead: inventory refuses them with a
/// status naming many SKUs, and the order must still end REJECTED at once.
fn large_lines(rng: &mut StdRng, tag: &str) -> Vec<(String, i64)> {
    let count = rng.random_range(40..=100);
    let mut skus: Vec<usize> = (0..BULK_SKUS).collect();
    skus.shuffle(rng);
    let mut lines: Vec<(String, i64)> = skus[..count]
        .iter()
        .map(|&index| (bulk_sku(index), rng.random_range(1..=3)))
        .collect();
    if rng.random_bool(0.5) {
        let unknown = rng.random_range(1..=count);
        for (index, line) in lines.iter_mut().take(unknown).enumerate() {
            line.0 = format!("{:X<64}", format!("GHOST-{tag}-{index}-"));
        }
    }
    lines
}

/// The callers of one run: every PlaceOrder (and CancelOrder) of the batch.
/// Returns the unexpected answers (INTERNAL, or a duplicate that got
/// another order).
pub async fn callers(
    clients: Vec<OrdersClient<Channel>>,
    user_id: String,
    planned: Vec<Planned>,
) -> Vec<String> {
    let calls = planned.into_iter().map(|order| {
        let clients = clients.clone();
        let user_id = user_id.clone();
        async move { one_order(&clients, user_id, order).await }
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn one_order(
    clients: &[OrdersClient<Channel>],
    user_id: String,
    order: Planned,
) -> Vec<String> {
    let request = PlaceOrderRequest {
        request_id: order.request_id.clone(),
        user_id,
        items: order
            .lines
            .iter()
            .map(|(sku, quantity)| OrderLine {
                sku: sku.clone(),
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
        Ok(placed) if placed.status() == OrderStatus::Confirmed => Some(placed.order_id.clone()),
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
                    problems.push(format!("{order_id}: cancel INTERNAL {}", status.message()));
                }
            }
        }
    }
    problems
}
