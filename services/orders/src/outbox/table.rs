//! The outbox tables (`migrations/0005_outbox.sql`): recording an event in
//! the transaction of its state change, and the relay's reads and writes.

use sqlx::{AnyConnection, AnyPool, Row};

use super::{event, TOPIC};
use crate::store::Order;

/// One pending event, as the relay publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The CloudEvents id.
    pub event_id: String,
    /// The order (the event's subject).
    pub order_id: String,
    /// Its place among the order's events.
    pub sequence: i64,
    /// The topic.
    pub topic: String,
    /// The CloudEvents type.
    pub event_type: String,
    /// The protobuf body.
    pub body: Vec<u8>,
    /// W3C trace context of its cause.
    pub traceparent: String,
    /// W3C trace state.
    pub tracestate: String,
    /// When it was recorded.
    pub created_at_unix_ms: i64,
}

impl Pending {
    /// The event to publish.
    pub fn to_event(&self) -> events::Event {
        let optional = |text: &str| Some(text.to_owned()).filter(|text| !text.is_empty());
        events::Event::protobuf(
            self.event_id.clone(),
            super::SOURCE,
            self.event_type.clone(),
            self.order_id.clone(),
            self.created_at_unix_ms,
            self.body.clone(),
        )
        .with_trace(optional(&self.traceparent), optional(&self.tracestate))
    }
}

/// Records `kind` about `order` — as it is now, inside the caller's
/// transaction — as the order's next event. The current span's trace
/// context goes with it.
pub(crate) async fn record(
    connection: &mut AnyConnection,
    order: &Order,
    kind: event::Kind,
    now_unix_ms: i64,
) -> Result<(), sqlx::Error> {
    let sequence: i64 = sqlx::query_scalar(
        "UPDATE orders SET event_sequence = event_sequence + 1 WHERE order_id = $1 RETURNING event_sequence",
    )
    .bind(&order.order_id)
    .fetch_one(&mut *connection)
    .await?;
    let body = event::encode(
        kind,
        order,
        u64::try_from(sequence).unwrap_or(0),
        now_unix_ms,
    );
    let (traceparent, tracestate) = events::trace::current_context();
    sqlx::query(
        "INSERT INTO outbox (event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms, published_at_unix_ms, attempts, last_error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, '')",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(&order.order_id)
    .bind(sequence)
    .bind(TOPIC)
    .bind(kind.event_type())
    .bind(events::text_body::encode(&body))
    .bind(traceparent.unwrap_or_default())
    .bind(tracestate.unwrap_or_default())
    .bind(now_unix_ms)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// The relay's access to the outbox.
#[derive(Debug, Clone)]
pub struct Table {
    pool: AnyPool,
}

impl Table {
    /// Over orders' pool.
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// Up to `limit` orders with pending events, the longest waiting first.
    pub async fn pending_orders(&self, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT order_id FROM outbox WHERE published_at_unix_ms = 0 \
             GROUP BY order_id ORDER BY MIN(created_at_unix_ms) LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Takes `order_id`'s lease for `owner` until `until` unless another
    /// relay holds a live one; whether it did.
    pub async fn lease(
        &self,
        order_id: &str,
        owner: &str,
        now_unix_ms: i64,
        until_unix_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let taken: Option<String> = sqlx::query_scalar(
            "INSERT INTO outbox_leases (order_id, owner, until_unix_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (order_id) DO UPDATE SET owner = excluded.owner, until_unix_ms = excluded.until_unix_ms \
             WHERE outbox_leases.until_unix_ms <= $4 RETURNING owner",
        )
        .bind(order_id)
        .bind(owner)
        .bind(until_unix_ms)
        .bind(now_unix_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(taken.is_some())
    }

    /// Gives the lease up (no-op when another relay has it by now).
    pub async fn release(&self, order_id: &str, owner: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM outbox_leases WHERE order_id = $1 AND owner = $2")
            .bind(order_id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The order's pending events, in sequence.
    pub async fn pending_of(&self, order_id: &str) -> Result<Vec<Pending>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms \
             FROM outbox WHERE order_id = $1 AND published_at_unix_ms = 0 ORDER BY sequence",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let payload: String = row.try_get("payload_hex")?;
                Ok(Pending {
                    event_id: row.try_get("event_id")?,
                    order_id: row.try_get("order_id")?,
                    sequence: row.try_get("sequence")?,
                    topic: row.try_get("topic")?,
                    event_type: row.try_get("event_type")?,
                    body: events::text_body::decode(&payload).ok_or_else(|| {
                        sqlx::Error::Decode("outbox payload_hex is not hex".into())
                    })?,
                    traceparent: row.try_get("traceparent")?,
                    tracestate: row.try_get("tracestate")?,
                    created_at_unix_ms: row.try_get("created_at_unix_ms")?,
                })
            })
            .collect()
    }

    /// The broker confirmed `event_id`.
    pub async fn mark_published(
        &self,
        event_id: &str,
        now_unix_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE outbox SET published_at_unix_ms = $1, attempts = attempts + 1, last_error = '' WHERE event_id = $2",
        )
        .bind(now_unix_ms.max(1))
        .bind(event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Publishing `event_id` failed with `error` (kept, bounded, for people).
    pub async fn record_failure(&self, event_id: &str, error: &str) -> Result<(), sqlx::Error> {
        let error: String = error.chars().take(300).collect();
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1 WHERE event_id = $2",
        )
        .bind(error)
        .bind(event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many events are pending, and when the oldest was recorded.
    pub async fn backlog(&self) -> Result<(i64, Option<i64>), sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending, MIN(created_at_unix_ms) AS oldest FROM outbox WHERE published_at_unix_ms = 0",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("pending")?, row.try_get("oldest")?))
    }

    /// Forgets events published before `before` and leases that ended.
    pub async fn prune(&self, before_unix_ms: i64, now_unix_ms: i64) -> Result<u64, sqlx::Error> {
        let pruned = sqlx::query(
            "DELETE FROM outbox WHERE published_at_unix_ms > 0 AND published_at_unix_ms < $1",
        )
        .bind(before_unix_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM outbox_leases WHERE until_unix_ms < $1")
            .bind(now_unix_ms)
            .execute(&self.pool)
            .await?;
        Ok(pruned)
    }
}
