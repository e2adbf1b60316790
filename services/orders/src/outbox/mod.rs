//! The transactional outbox: the events an order's final states cause
//! (`mesh.events.v1`: OrderConfirmed, OrderCancelled, OrderRejected) are
//! written **in the same database transaction** as the state change (see
//! `Store::finish`), so an order is never CONFIRMED without its event, nor
//! the reverse, whatever crashes when; the [`relay`] on every instance then
//! publishes them with the broker's confirmation and marks them.
//!
//! Each event carries the order's sequence number (`orders.event_sequence`,
//! incremented in the same transaction) and the W3C trace context of the
//! operation that caused it, so a consumer's span continues the order's
//! trace.

pub mod event;
mod metrics;
pub mod relay;
pub mod table;

use std::sync::Arc;

use tokio::sync::Notify;

pub use relay::{Relay, RelayOptions};
pub use table::Table;

/// The topic orders publishes to.
pub const TOPIC: &str = "orders";

/// The CloudEvents `source` of orders' events.
pub const SOURCE: &str = "/mesh/orders";

/// Wakes the relay when a transaction that recorded an event committed.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// Something was committed (a wake with no relay waiting is kept for
    /// its next wait).
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Waits for the next [`Wake::notify`].
    pub async fn notified(&self) {
        self.0.notified().await;
    }
}
