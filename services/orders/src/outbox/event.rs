//! The events orders publishes (`proto/mesh/events/v1/orders.proto`), built
//! from the order as it is in the transaction that finishes it.

use mesh::proto::events::v1::{OrderCancelled, OrderConfirmed, OrderLine, OrderRejected};
use prost::Message;

use crate::store::Order;

/// Which final state the event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// CONFIRMED.
    Confirmed,
    /// CANCELLED.
    Cancelled,
    /// REJECTED.
    Rejected,
}

impl Kind {
    /// The CloudEvents `type`: the protobuf message's full name.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Confirmed => "mesh.events.v1.OrderConfirmed",
            Self::Cancelled => "mesh.events.v1.OrderCancelled",
            Self::Rejected => "mesh.events.v1.OrderRejected",
        }
    }
}

/// The body of `kind` about `order`, its `sequence`-th event, at `at_unix_ms`.
pub fn encode(kind: Kind, order: &Order, sequence: u64, at_unix_ms: i64) -> Vec<u8> {
    let lines: Vec<OrderLine> = order
        .lines
        .iter()
        .map(|line| OrderLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price_cents: line.unit_price_cents,
        })
        .collect();
    match kind {
        Kind::Confirmed => OrderConfirmed {
            order_id: order.order_id.clone(),
            user_id: order.user_id.clone(),
            lines,
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            payment_id: order.payment_id.clone(),
            placed_at_unix_ms: order.created_at_unix_ms,
            confirmed_at_unix_ms: at_unix_ms,
            sequence,
        }
        .encode_to_vec(),
        Kind::Cancelled => OrderCancelled {
            order_id: order.order_id.clone(),
            user_id: order.user_id.clone(),
            lines,
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            payment_id: order.payment_id.clone(),
            placed_at_unix_ms: order.created_at_unix_ms,
            cancelled_at_unix_ms: at_unix_ms,
            sequence,
        }
        .encode_to_vec(),
        Kind::Rejected => OrderRejected {
            order_id: order.order_id.clone(),
            user_id: order.user_id.clone(),
            lines,
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            reason: order.rejection_reason.clone(),
            placed_at_unix_ms: order.created_at_unix_ms,
            rejected_at_unix_ms: at_unix_ms,
            sequence,
        }
        .encode_to_vec(),
    }
}
