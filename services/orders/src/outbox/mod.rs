//! The transactional outbox: the events an order's final states cause
//! (`mesh.events.v1`: OrderConfirmed, OrderCancelled, OrderRejected) are
//! written **in the same database transaction** as the state change (see
//! `Store::finish`), so an order is never CONFIRMED without its event, nor
//! the reverse, whatever crashes when; the [`relay`] on every instance then
//! publishes them with the broker's confirmation and removes them (the
//! broker's stream or queue holds them from then on).
//!
//! Each event carries the order's sequence number (`orders.event_sequence`,
//! incremented in the same transaction) and the W3C trace context of the
//! operation that caused it, so a consumer's span continues the order's
//! trace.

mod metrics;
pub mod relay;
pub mod table;

pub use relay::{Relay, RelayOptions};
pub use table::Table;

pub use crate::store::events::{Kind, Wake, SOURCE, TOPIC};
