//! The invariants every run must end in, read from the services' own
//! databases and the broker:
//!
//! 1. every CONFIRMED order has exactly one shipment, PENDING;
//! 2. every CANCELLED order's shipment is CANCELLED or RETURN_REQUESTED;
//! 3. no shipment without a confirmed (or since cancelled) order; a
//!    REJECTED order has none;
//! 4. every event of every order was applied exactly once, in sequence, and
//!    no cancel was applied before its order's confirmation;
//! 5. the outbox is drained, no event waits in the inbox, the consumer lag
//!    is zero and nothing was dead-lettered.

use std::collections::BTreeMap;

use events::{Broker, EventBroker};
use sqlx::{AnyPool, Row};

/// What the databases and the broker say now.
#[derive(Debug, Default)]
pub struct State {
    /// order id → (status, events so far).
    orders: BTreeMap<String, (String, i64)>,
    /// order id → shipment status.
    shipments: BTreeMap<String, String>,
    /// (order id, sequence, type, state, applied at).
    inbox: Vec<(String, i64, String, String, i64)>,
    outbox_pending: i64,
    backlog: u64,
    dead_letters: u64,
}

pub async fn read(orders_db: &str, shipping_db: &str, broker: &Broker) -> Result<State, String> {
    let orders = pool(orders_db).await?;
    let shipping = pool(shipping_db).await?;
    let mut state = State::default();
    // Each database read in one transaction (one snapshot): an event's
    // effect and its inbox row commit together, and a check between two
    // separate reads could see the one without the other.
    let mut orders_tx = orders.begin().await.map_err(text)?;
    for row in sqlx::query("SELECT order_id, status, event_sequence FROM orders")
        .fetch_all(&mut *orders_tx)
        .await
        .map_err(text)?
    {
        state.orders.insert(
            row.try_get("order_id").map_err(text)?,
            (
                row.try_get("status").map_err(text)?,
                row.try_get("event_sequence").map_err(text)?,
            ),
        );
    }
    state.outbox_pending =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at_unix_ms = 0")
            .fetch_one(&mut *orders_tx)
            .await
            .map_err(text)?;
    orders_tx.rollback().await.map_err(text)?;
    let mut shipping_tx = shipping.begin().await.map_err(text)?;
    for row in sqlx::query("SELECT order_id, status FROM shipments")
        .fetch_all(&mut *shipping_tx)
        .await
        .map_err(text)?
    {
        state.shipments.insert(
            row.try_get("order_id").map_err(text)?,
            row.try_get("status").map_err(text)?,
        );
    }
    for row in sqlx::query(
        "SELECT order_id, sequence, event_type, state, applied_at_unix_ms FROM inbox WHERE consumer = 'shipping'",
    )
    .fetch_all(&mut *shipping_tx)
    .await
    .map_err(text)?
    {
        state.inbox.push((
            row.try_get("order_id").map_err(text)?,
            row.try_get("sequence").map_err(text)?,
            row.try_get("event_type").map_err(text)?,
            row.try_get("state").map_err(text)?,
            row.try_get("applied_at_unix_ms").map_err(text)?,
        ));
    }
    shipping_tx.rollback().await.map_err(text)?;
    orders.close().await;
    shipping.close().await;
    state.backlog = broker
        .backlog("orders", "shipping")
        .await
        .map_err(text)?
        .total();
    state.dead_letters = broker
        .dead_letter_count("orders", "shipping")
        .await
        .map_err(text)?;
    Ok(state)
}

async fn pool(url: &str) -> Result<AnyPool, String> {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(text)
}

fn text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

impl State {
    /// Whether everything has settled (not whether it is right).
    pub fn settled(&self) -> bool {
        self.outbox_pending == 0
            && self.backlog == 0
            && self
                .orders
                .values()
                .all(|(status, _)| !matches!(status.as_str(), "PENDING" | "CANCELLING"))
            && self
                .orders
                .iter()
                .filter(|(_, (status, _))| status == "CONFIRMED")
                .all(|(order_id, _)| self.shipments.contains_key(order_id))
            && self
                .inbox
                .iter()
                .all(|row| row.3 != "WAITING" && row.3 != "RECEIVED")
            && self.applied_everything()
    }

    fn applied_everything(&self) -> bool {
        let applied: usize = self.inbox.iter().filter(|row| row.3 == "APPLIED").count();
        let expected: i64 = self.orders.values().map(|(_, events)| *events).sum();
        applied as i64 == expected
    }

    /// The first broken invariant, if any.
    pub fn violation(&self) -> Option<String> {
        for (order_id, (status, _)) in &self.orders {
            let shipment = self.shipments.get(order_id).map(String::as_str);
            let ok = match status.as_str() {
                "CONFIRMED" => shipment == Some("PENDING"),
                "CANCELLED" => matches!(shipment, Some("CANCELLED" | "RETURN_REQUESTED")),
                "REJECTED" => shipment.is_none(),
                other => return Some(format!("order {order_id} is still {other}")),
            };
            if !ok {
                return Some(format!(
                    "order {order_id} is {status} but its shipment is {shipment:?}"
                ));
            }
        }
        for order_id in self.shipments.keys() {
            if !self.orders.contains_key(order_id) {
                return Some(format!(
                    "shipment for an order that does not exist: {order_id}"
                ));
            }
        }
        let mut applied: BTreeMap<&str, Vec<(i64, &str, i64)>> = BTreeMap::new();
        for (order_id, sequence, event_type, state, at) in &self.inbox {
            match state.as_str() {
                "APPLIED" => applied
                    .entry(order_id)
                    .or_default()
                    .push((*sequence, event_type, *at)),
                "SKIPPED" => {}
                other => return Some(format!("inbox row of {order_id} #{sequence} left {other}")),
            }
        }
        for (order_id, (_, events)) in &self.orders {
            let mut rows = applied.remove(order_id.as_str()).unwrap_or_default();
            rows.sort();
            let sequences: Vec<i64> = rows.iter().map(|row| row.0).collect();
            let expected: Vec<i64> = (1..=*events).collect();
            if sequences != expected {
                return Some(format!(
                    "order {order_id}: applied sequences {sequences:?}, expected each of {expected:?} once"
                ));
            }
            let confirmed_at = rows
                .iter()
                .find(|row| row.1 == "mesh.events.v1.OrderConfirmed")
                .map(|row| row.2);
            for row in rows
                .iter()
                .filter(|row| row.1 == "mesh.events.v1.OrderCancelled")
            {
                match confirmed_at {
                    Some(confirmed) if confirmed <= row.2 => {}
                    _ => {
                        return Some(format!(
                            "order {order_id}: a cancel was applied before its confirmation"
                        ))
                    }
                }
            }
        }
        if let Some(order_id) = applied.keys().next() {
            return Some(format!(
                "events applied for {order_id}, which orders does not know"
            ));
        }
        if self.outbox_pending != 0 {
            return Some(format!("{} events left in the outbox", self.outbox_pending));
        }
        if self.backlog != 0 {
            return Some(format!("consumer lag {}", self.backlog));
        }
        if self.dead_letters != 0 {
            return Some(format!("{} events dead-lettered", self.dead_letters));
        }
        None
    }

    /// Orders so far, and events applied.
    pub fn totals(&self) -> (usize, usize) {
        (
            self.orders.len(),
            self.inbox.iter().filter(|row| row.3 == "APPLIED").count(),
        )
    }
}
