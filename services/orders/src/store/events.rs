//! The event a final state causes, written into the outbox **inside** the
//! state change's write unit (`Store::finish`, `Store::resolve`: one
//! savepoint of the group-commit writer's transaction): which kind it is,
//! its protobuf body (`proto/mesh/events/v1/orders.proto`, built from the
//! order as it is in that unit), the row, and the [`Wake`] sent to the
//! relay once the unit's commit is acknowledged. The relay's side (reading, publishing, removing) is
//! `crate::outbox`.

use mesh::{
    proto::events::v1::{OrderCancelled, OrderConfirmed, OrderLine, OrderRejected},
    storage::NumberedArgs,
};
use prost::Message;
use sqlx::AnyConnection;

pub use super::handoff::{Handed, Wake};
use super::Order;
use super::Pending;
use crate::domain::OrderStatus;

/// The topic orders publishes to.
pub const TOPIC: &str = "orders";

/// The CloudEvents `source` of orders' events.
pub const SOURCE: &str = "/mesh/orders";

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
    /// The event announcing the final `status` (CONFIRMED, CANCELLED, or
    /// else REJECTED).
    pub fn of_final(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Confirmed => Self::Confirmed,
            OrderStatus::Cancelled => Self::Cancelled,
            _ => Self::Rejected,
        }
    }

    /// The CloudEvents `type`: the protobuf message's full name.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Confirmed => "mesh.events.v1.OrderConfirmed",
            Self::Cancelled => "mesh.events.v1.OrderCancelled",
            Self::Rejected => "mesh.events.v1.OrderRejected",
        }
    }
}

/// A new event's id (its CloudEvents `id`, the outbox row's key): a UUID
/// version 7, whose leading bits are its creation time, so new rows land at
/// the end of the key's index instead of at random places in it (fewer
/// pages touched, and written to the WAL, per commit). Unique like a v4:
/// 74 random bits within each millisecond.
fn event_id() -> String {
    uuid::Uuid::now_v7().to_string()
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

/// An event to record, with the trace context of the request that causes
/// it — captured on the caller's task, since a write unit runs on the
/// writer's task, outside the caller's span.
#[derive(Debug, Clone)]
pub(crate) struct Cause {
    kind: Kind,
    at_unix_ms: i64,
    /// The relay the recording unit leases the order for, and until when.
    relay: String,
    lease_until_unix_ms: i64,
    traceparent: String,
    tracestate: String,
}

impl Cause {
    /// `kind` at `at_unix_ms`, in the current span's trace, to be handed
    /// to `wake`'s relay.
    pub(crate) fn capture(kind: Kind, at_unix_ms: i64, wake: &Wake) -> Self {
        let (traceparent, tracestate) = events::trace::current_context();
        Self {
            kind,
            at_unix_ms,
            relay: wake.owner().to_owned(),
            lease_until_unix_ms: at_unix_ms.saturating_add(wake.lease_ms()),
            traceparent: traceparent.unwrap_or_default(),
            tracestate: tracestate.unwrap_or_default(),
        }
    }
}

impl Cause {
    /// The event this cause makes of `order`, its `sequence`-th: what the
    /// row holds, and what the relay publishes.
    fn event(&self, order: &Order, sequence: i64) -> Pending {
        Pending {
            event_id: event_id(),
            order_id: order.order_id.clone(),
            sequence,
            topic: TOPIC.to_owned(),
            event_type: self.kind.event_type().to_owned(),
            body: encode(
                self.kind,
                order,
                u64::try_from(sequence).unwrap_or(0),
                self.at_unix_ms,
            ),
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
            created_at_unix_ms: self.at_unix_ms,
        }
    }

    /// `event` handed to the relay under the lease this cause took.
    fn handed(&self, event: Pending) -> Handed {
        Handed {
            until_unix_ms: self.lease_until_unix_ms,
            event,
        }
    }
}

/// Records `cause` about `order` — as it is now, inside the caller's write
/// unit — as the order's next event, and takes the order's lease for the
/// cause's relay unless another relay holds a live one: the end of that
/// lease if taken, with the event (hand it over with [`Wake::hand_over`]
/// once committed).
pub(crate) async fn record(
    connection: &mut AnyConnection,
    order: &Order,
    cause: &Cause,
) -> Result<Option<Handed>, sqlx::Error> {
    let sequence: i64 = sqlx::query_scalar(NEXT_SEQUENCE)
        .bind(&order.order_id)
        .fetch_one(&mut *connection)
        .await?;
    record_numbered(connection, order, cause, sequence).await
}

/// [`record`] for a unit whose own write to the order's row already took
/// the next number (`event_sequence = event_sequence + 1 … RETURNING
/// event_sequence`): `sequence` is that number.
pub(crate) async fn record_numbered(
    connection: &mut AnyConnection,
    order: &Order,
    cause: &Cause,
    sequence: i64,
) -> Result<Option<Handed>, sqlx::Error> {
    let event = cause.event(order, sequence);
    let query = sqlx::query_scalar::<_, String>(if sequence == 1 {
        // The order's first event: no relay can hold the order yet, so the
        // row carries its relay's lease itself (no lease row to write).
        RECORD_CLAIMED
    } else {
        // A later event: the row and the order's lease in one command.
        RECORD_AND_LEASE_POSTGRES
    })
    .bind(event.event_id.as_str())
    .bind(&order.order_id)
    .bind(sequence)
    .bind(TOPIC)
    .bind(cause.kind.event_type())
    .bind(events::text_body::encode(&event.body))
    .bind(cause.traceparent.as_str())
    .bind(cause.tracestate.as_str())
    .bind(cause.at_unix_ms)
    .bind(cause.relay.as_str())
    .bind(cause.lease_until_unix_ms);
    // Every row is read, so that every statement runs to its end.
    let leased = query.fetch_all(&mut *connection).await?;
    Ok((!leased.is_empty()).then(|| cause.handed(event)))
}

/// [`record`] in a unit on SQLite's writer thread.
pub(crate) fn record_on_thread(
    connection: &rusqlite::Connection,
    order: &Order,
    cause: &Cause,
) -> Result<Option<Handed>, rusqlite::Error> {
    let sequence: i64 = NumberedArgs::new()
        .arg(order.order_id.clone())
        .first_row(connection, NEXT_SEQUENCE, |row| row.get(0))?
        .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    record_numbered_on_thread(connection, order, cause, sequence)
}

/// [`record_numbered`] in a unit on SQLite's writer thread: the row (an
/// order's first event claimed in the row itself), then for a later event
/// the order's lease, each a statement of its own.
pub(crate) fn record_numbered_on_thread(
    connection: &rusqlite::Connection,
    order: &Order,
    cause: &Cause,
    sequence: i64,
) -> Result<Option<Handed>, rusqlite::Error> {
    let event = cause.event(order, sequence);
    let row = NumberedArgs::new()
        .arg(event.event_id.clone())
        .arg(order.order_id.clone())
        .arg(sequence)
        .arg(TOPIC.to_owned())
        .arg(cause.kind.event_type().to_owned())
        .arg(events::text_body::encode(&event.body))
        .arg(cause.traceparent.clone())
        .arg(cause.tracestate.clone())
        .arg(cause.at_unix_ms);
    let leased = if sequence == 1 {
        let claimed = row
            .arg(cause.relay.clone())
            .arg(cause.lease_until_unix_ms)
            .execute(connection, RECORD_CLAIMED_ROW)?;
        claimed > 0
    } else {
        row.execute(connection, RECORD_ROW)?;
        let taken = NumberedArgs::new()
            .arg(order.order_id.clone())
            .arg(cause.relay.clone())
            .arg(cause.lease_until_unix_ms)
            .arg(cause.at_unix_ms)
            .rows(connection, LEASE, |_| Ok(()))?;
        !taken.is_empty()
    };
    Ok(leased.then(|| cause.handed(event)))
}

/// The next event number of an order: $1 the order.
const NEXT_SEQUENCE: &str =
    "UPDATE orders SET event_sequence = event_sequence + 1 WHERE order_id = $1 RETURNING event_sequence";

/// A later event's row ($1–$9), without a claim: its lease is a row of
/// `outbox_leases` ([`LEASE`]).
const RECORD_ROW: &str = "INSERT INTO outbox (event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms, published_at_unix_ms, attempts, last_error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, '')";

/// Whether a relay other than `$owner` holds a live claim at `$now` on a
/// pending row of the order `$order` (SQL expressions, spliced in).
macro_rules! claimed_by_another {
    ($order:literal, $owner:literal, $now:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM outbox c WHERE c.order_id = ",
            $order,
            " AND c.published_at_unix_ms = 0 AND c.claimed_by <> ",
            $owner,
            " AND c.claimed_until_unix_ms > ",
            $now,
            ")"
        )
    };
}
pub(crate) use claimed_by_another;

/// An order's first event ($1–$9), claimed for the relay $10 until $11
/// (the SQL text, for both statements below).
macro_rules! record_claimed {
    () => {
        "INSERT INTO outbox (event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms, published_at_unix_ms, attempts, last_error, claimed_by, claimed_until_unix_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, '', $10, $11)"
    };
}

/// [`record_claimed!`] through the pool, answering the claim as a row.
const RECORD_CLAIMED: &str = concat!(record_claimed!(), " RETURNING claimed_by");

/// [`record_claimed!`] on the writer thread, where the rows changed answer
/// it: SQLite runs `RETURNING` through a temporary table of its own, a cost
/// on every order's commit path for an answer that is always the one row.
const RECORD_CLAIMED_ROW: &str = record_claimed!();

/// A later event's row ($1–$9) and the order's lease for $10 until $11
/// unless another relay holds a live one at $9 (a lease row or a claim;
/// the lease statement is [`lease_in`]'s), as one PostgreSQL command (the
/// row's INSERT in a data-modifying CTE). SQLite's writer thread runs the
/// two as statements of their own ([`record_numbered_on_thread`]).
const RECORD_AND_LEASE_POSTGRES: &str = concat!(
    "WITH recorded AS ( \
       INSERT INTO outbox (event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms, published_at_unix_ms, attempts, last_error) \
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, '') RETURNING order_id \
     ) \
     INSERT INTO outbox_leases (order_id, owner, until_unix_ms) SELECT order_id, $10, $11 FROM recorded WHERE NOT ",
    claimed_by_another!("$2", "$10", "$9"),
    " ON CONFLICT (order_id) DO UPDATE SET owner = excluded.owner, until_unix_ms = excluded.until_unix_ms \
     WHERE outbox_leases.until_unix_ms <= $9 OR outbox_leases.owner = excluded.owner RETURNING owner"
);

/// [`lease_in`]'s statement: $1 order, $2 owner, $3 until, $4 now.
pub(crate) const LEASE: &str = concat!(
    "INSERT INTO outbox_leases (order_id, owner, until_unix_ms) SELECT $1, $2, $3 WHERE NOT ",
    claimed_by_another!("$1", "$2", "$4"),
    " ON CONFLICT (order_id) DO UPDATE SET owner = excluded.owner, until_unix_ms = excluded.until_unix_ms \
     WHERE outbox_leases.until_unix_ms <= $4 OR outbox_leases.owner = excluded.owner RETURNING owner",
);

/// Takes `order_id`'s lease for `owner` until `until` unless another relay
/// holds a live one (a relay's own lease is renewed), on `connection`;
/// whether it did.
pub(crate) async fn lease_in(
    connection: &mut AnyConnection,
    order_id: &str,
    owner: &str,
    now_unix_ms: i64,
    until_unix_ms: i64,
) -> Result<bool, sqlx::Error> {
    let taken: Option<String> = sqlx::query_scalar(LEASE)
        .bind(order_id)
        .bind(owner)
        .bind(until_unix_ms)
        .bind(now_unix_ms)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(taken.is_some())
}
