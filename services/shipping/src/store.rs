//! The shipping database: shipments, the per-order progress of events, and
//! the inbox (docs/EVENTS.md).
//!
//! Every write is a unit of the database's group-commit writer
//! ([`mesh::storage::GroupCommit`], ADR 0019): answered only once durably
//! committed, so an event is acknowledged to the broker only after its
//! effect is on disk; reads stay on the pool.
//!
//! [`Store::handle`] applies one event in **one write unit** (its own
//! savepoint of the writer's transaction: all or nothing): it records the
//! event in the inbox first (a redelivery stops there: nothing changes), then
//! either applies it — when it is the next of its order — and every event of
//! the order that was waiting for it, or keeps it waiting. So an order's
//! events take effect exactly once each and in sequence order, whatever
//! order and however often the broker delivers them.
//!
//! On PostgreSQL the upsert of the order's progress row locks it, so two
//! instances handling two events of one order take turns (should their
//! batches lock two orders in opposite orders, the database aborts one as a
//! deadlock: a transient error, and the event is delivered again); on SQLite
//! the writer's `BEGIN IMMEDIATE` takes the database's write lock.

use futures::future::BoxFuture;
use mesh::storage::{GroupCommit, GroupCommitOptions, WriteError};
use sqlx::{any::AnyRow, AnyConnection, AnyPool, Row};

use crate::domain::{self, Line, OrderEvent, PageKey, ShipmentStatus};

/// What [`Store::handle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Applied (with any events of the order that were waiting for it).
    Applied,
    /// Seen before, or older than what was applied: nothing changed.
    Duplicate,
    /// Kept until the order's earlier events have been applied.
    Waiting,
}

/// A stored shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    /// `shp_…`.
    pub shipment_id: String,
    /// Its order.
    pub order_id: String,
    /// Its owner.
    pub user_id: String,
    /// Where it is.
    pub status: ShipmentStatus,
    /// Set once shipped.
    pub tracking_number: String,
    /// Created (the confirmation was applied).
    pub created_at_unix_ms: i64,
    /// Last change.
    pub updated_at_unix_ms: i64,
    /// When it was shipped (0 before).
    pub shipped_at_unix_ms: i64,
    /// What it holds.
    pub lines: Vec<Line>,
}

/// One received event, as the inbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<'a> {
    /// `ce_id`.
    pub event_id: &'a str,
    /// `ce_type`.
    pub event_type: &'a str,
    /// The body (kept while the event waits).
    pub body: &'a [u8],
    /// The event, decoded.
    pub event: &'a OrderEvent,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No shipment has this id.
    #[error("shipment {0} not found")]
    NotFound(String),
    /// MarkShipped on a shipment whose order was cancelled.
    #[error("shipment {shipment_id} is {status} and cannot be shipped")]
    NotShippable {
        /// The shipment.
        shipment_id: String,
        /// Its state.
        status: &'static str,
    },
    /// A row the code cannot read.
    #[error("corrupt shipping row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The write was not committed (a full queue, a failed batch).
    #[error(transparent)]
    Write(#[from] WriteError),
}

const COLUMNS: &str = "shipment_id, order_id, user_id, status, tracking_number, created_at_unix_ms, updated_at_unix_ms, shipped_at_unix_ms";

/// The shipping database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    writer: GroupCommit,
}

impl Store {
    /// A store over an open, migrated pool; starts the database's writer
    /// (call inside a Tokio runtime).
    pub fn new(pool: AnyPool) -> Self {
        let writer = GroupCommit::start("shipping", pool.clone(), GroupCommitOptions::default());
        Self { pool, writer }
    }

    /// Runs `unit` in the writer's next batch; answers once it is committed.
    async fn write<T, F>(&self, unit: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
        T: Send + 'static,
    {
        self.writer.write(unit).await
    }

    /// Applies `received` for `consumer` (see the module docs).
    ///
    /// `clock` is read inside the write unit: the time an event is applied
    /// is taken once the order's progress row is locked, so one order's
    /// events carry their times in the order they were applied, whichever
    /// instance applied them (a time taken before the unit waited for the
    /// database could be older than an event applied before it).
    pub async fn handle<C>(
        &self,
        consumer: &str,
        received: &Received<'_>,
        clock: C,
    ) -> Result<Handled, StoreError>
    where
        C: Fn() -> i64 + Send + Sync + 'static,
    {
        let consumer = consumer.to_owned();
        let received = OwnedReceived::from(received);
        let clock = std::sync::Arc::new(clock);
        self.write(move |connection| {
            let clock = clock.clone();
            Box::pin(async move { handle_in(connection, &consumer, &received, &*clock).await })
        })
        .await
    }

    /// One shipment.
    pub async fn get(&self, shipment_id: &str) -> Result<Shipment, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM shipments WHERE shipment_id = $1"
        ))
        .bind(shipment_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(shipment_id.to_owned()))?;
        self.with_lines(shipment_from_row(&row)?).await
    }

    /// The order's shipment, if it has one.
    pub async fn by_order(&self, order_id: &str) -> Result<Vec<Shipment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM shipments WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        self.all_with_lines(&rows).await
    }

    /// A page of the user's shipments, newest first, after `after`.
    pub async fn by_user(
        &self,
        user_id: &str,
        after: Option<&PageKey>,
        limit: i64,
    ) -> Result<Vec<Shipment>, StoreError> {
        let rows = match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM shipments WHERE user_id = $1 \
                     ORDER BY created_at_unix_ms DESC, shipment_id DESC LIMIT $2"
                ))
                .bind(user_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            Some(key) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM shipments WHERE user_id = $1 \
                     AND (created_at_unix_ms < $2 OR (created_at_unix_ms = $2 AND shipment_id < $3)) \
                     ORDER BY created_at_unix_ms DESC, shipment_id DESC LIMIT $4"
                ))
                .bind(user_id)
                .bind(key.created_at_unix_ms)
                .bind(&key.shipment_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        self.all_with_lines(&rows).await
    }

    /// PENDING → SHIPPED with `tracking_number`; a shipped one is returned
    /// as it is; a cancelled one (or one whose return was asked for) cannot
    /// be shipped.
    pub async fn mark_shipped(
        &self,
        shipment_id: &str,
        tracking_number: &str,
        now_unix_ms: i64,
    ) -> Result<Shipment, StoreError> {
        let (shipment_id_owned, tracking_number) =
            (shipment_id.to_owned(), tracking_number.to_owned());
        let updated = self
            .write(move |connection| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE shipments SET status = 'SHIPPED', tracking_number = $1, shipped_at_unix_ms = $2, updated_at_unix_ms = $2 \
                         WHERE shipment_id = $3 AND status = 'PENDING'",
                    )
                    .bind(&tracking_number)
                    .bind(now_unix_ms)
                    .bind(&shipment_id_owned)
                    .execute(&mut *connection)
                    .await?;
                    Ok(done.rows_affected())
                })
            })
            .await?;
        let shipment = self.get(shipment_id).await?;
        match shipment.status {
            ShipmentStatus::Shipped => Ok(shipment),
            ShipmentStatus::Pending if updated == 0 => Err(StoreError::Corrupt(format!(
                "shipment {shipment_id} stayed PENDING after MarkShipped"
            ))),
            status => Err(StoreError::NotShippable {
                shipment_id: shipment_id.to_owned(),
                status: status.as_str(),
            }),
        }
    }

    async fn all_with_lines(&self, rows: &[AnyRow]) -> Result<Vec<Shipment>, StoreError> {
        let mut shipments = Vec::with_capacity(rows.len());
        for row in rows {
            shipments.push(self.with_lines(shipment_from_row(row)?).await?);
        }
        Ok(shipments)
    }

    async fn with_lines(&self, mut shipment: Shipment) -> Result<Shipment, StoreError> {
        let rows = sqlx::query(
            "SELECT sku, quantity FROM shipment_lines WHERE shipment_id = $1 ORDER BY line_no",
        )
        .bind(&shipment.shipment_id)
        .fetch_all(&self.pool)
        .await?;
        shipment.lines = rows
            .iter()
            .map(|row| {
                Ok(Line {
                    sku: row.try_get("sku")?,
                    quantity: row.try_get("quantity")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(shipment)
    }
}

/// A [`Received`] the writer task can own.
struct OwnedReceived {
    event_id: String,
    event_type: String,
    body: Vec<u8>,
    event: OrderEvent,
}

impl From<&Received<'_>> for OwnedReceived {
    fn from(received: &Received<'_>) -> Self {
        Self {
            event_id: received.event_id.to_owned(),
            event_type: received.event_type.to_owned(),
            body: received.body.to_vec(),
            event: received.event.clone(),
        }
    }
}

/// [`Store::handle`]'s write unit.
async fn handle_in(
    connection: &mut AnyConnection,
    consumer: &str,
    received: &OwnedReceived,
    clock: &(dyn Fn() -> i64 + Send + Sync),
) -> Result<Handled, StoreError> {
    let event = &received.event;
    let now_unix_ms = clock();
    let recorded = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, order_id, sequence, event_type, state, payload_hex, received_at_unix_ms, applied_at_unix_ms) \
         VALUES ($1, $2, $3, $4, $5, 'RECEIVED', '', $6, 0) ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(&received.event_id)
    .bind(event.order_id())
    .bind(event.sequence())
    .bind(&received.event_type)
    .bind(now_unix_ms)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    if recorded == 0 {
        return Ok(Handled::Duplicate);
    }
    // Locks the order's progress row until the commit (a no-op update when
    // it exists): what another instance applied to this order before is
    // committed and visible from here on.
    let progress = sqlx::query(
        "INSERT INTO order_progress (order_id, applied_sequence, updated_at_unix_ms) VALUES ($1, 0, 0) \
         ON CONFLICT (order_id) DO UPDATE SET applied_sequence = order_progress.applied_sequence \
         RETURNING applied_sequence, updated_at_unix_ms",
    )
    .bind(event.order_id())
    .fetch_one(&mut *connection)
    .await?;
    let applied: i64 = progress.try_get("applied_sequence")?;
    let last_applied_at: i64 = progress.try_get("updated_at_unix_ms")?;
    // An order's events carry their times in the order they were applied,
    // whichever instance applied them and whatever its clock said.
    let now_unix_ms = clock().max(now_unix_ms).max(last_applied_at);
    let sequence = event.sequence();
    let outcome = if sequence <= applied {
        set_state(connection, consumer, &received.event_id, "SKIPPED", "", 0).await?;
        Handled::Duplicate
    } else if sequence > applied + 1 {
        set_state(
            connection,
            consumer,
            &received.event_id,
            "WAITING",
            &events::text_body::encode(&received.body),
            0,
        )
        .await?;
        Handled::Waiting
    } else {
        apply(connection, event, now_unix_ms).await?;
        set_state(
            connection,
            consumer,
            &received.event_id,
            "APPLIED",
            "",
            now_unix_ms,
        )
        .await?;
        let last = apply_waiting(
            connection,
            consumer,
            event.order_id(),
            sequence,
            now_unix_ms,
        )
        .await?;
        sqlx::query(
            "UPDATE order_progress SET applied_sequence = $1, updated_at_unix_ms = $2 WHERE order_id = $3",
        )
        .bind(last)
        .bind(now_unix_ms)
        .bind(event.order_id())
            .execute(&mut *connection)
            .await?;
        Handled::Applied
    };
    Ok(outcome)
}

/// The effect of one event of its order, in sequence.
async fn apply(
    connection: &mut AnyConnection,
    event: &OrderEvent,
    now_unix_ms: i64,
) -> Result<(), StoreError> {
    match event {
        OrderEvent::Confirmed {
            order_id,
            user_id,
            lines,
            ..
        } => {
            let shipment_id = domain::shipment_id_for(order_id);
            let created = sqlx::query(
                "INSERT INTO shipments (shipment_id, order_id, user_id, status, tracking_number, created_at_unix_ms, updated_at_unix_ms, shipped_at_unix_ms) \
                 VALUES ($1, $2, $3, 'PENDING', '', $4, $4, 0) ON CONFLICT (shipment_id) DO NOTHING",
            )
            .bind(&shipment_id)
            .bind(order_id)
            .bind(user_id)
            .bind(now_unix_ms)
            .execute(&mut *connection)
            .await?
            .rows_affected();
            if created == 1 {
                for (line_no, line) in lines.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO shipment_lines (shipment_id, line_no, sku, quantity) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&shipment_id)
                    .bind(line_no as i64)
                    .bind(&line.sku)
                    .bind(line.quantity)
                    .execute(&mut *connection)
                    .await?;
                }
            }
        }
        OrderEvent::Cancelled { order_id, .. } => {
            sqlx::query(
                "UPDATE shipments SET status = CASE status WHEN 'PENDING' THEN 'CANCELLED' WHEN 'SHIPPED' THEN 'RETURN_REQUESTED' ELSE status END, \
                 updated_at_unix_ms = $1 WHERE order_id = $2",
            )
            .bind(now_unix_ms)
            .bind(order_id)
            .execute(&mut *connection)
            .await?;
        }
        // Nothing to ship; its sequence number is used up all the same.
        OrderEvent::Rejected { .. } => {}
    }
    Ok(())
}

/// Applies the events of `order_id` that waited for `applied`, in sequence;
/// returns the last sequence applied.
async fn apply_waiting(
    connection: &mut AnyConnection,
    consumer: &str,
    order_id: &str,
    mut applied: i64,
    now_unix_ms: i64,
) -> Result<i64, StoreError> {
    loop {
        let row = sqlx::query(
            "SELECT event_id, event_type, payload_hex FROM inbox \
             WHERE consumer = $1 AND order_id = $2 AND state = 'WAITING' AND sequence = $3",
        )
        .bind(consumer)
        .bind(order_id)
        .bind(applied + 1)
        .fetch_optional(&mut *connection)
        .await?;
        let Some(row) = row else {
            // Other copies of what is applied now (another id, same
            // sequence) will never apply.
            sqlx::query(
                "UPDATE inbox SET state = 'SKIPPED', payload_hex = '' \
                 WHERE consumer = $1 AND order_id = $2 AND state = 'WAITING' AND sequence <= $3",
            )
            .bind(consumer)
            .bind(order_id)
            .bind(applied)
            .execute(&mut *connection)
            .await?;
            return Ok(applied);
        };
        let event_id: String = row.try_get("event_id")?;
        let event_type: String = row.try_get("event_type")?;
        let payload: String = row.try_get("payload_hex")?;
        let body = events::text_body::decode(&payload).ok_or_else(|| {
            StoreError::Corrupt(format!("inbox payload of {event_id} is not hex"))
        })?;
        let event = domain::decode_event(&event_type, order_id, &body)
            .map_err(StoreError::Corrupt)?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("inbox event {event_id} has unknown type"))
            })?;
        apply(connection, &event, now_unix_ms).await?;
        set_state(connection, consumer, &event_id, "APPLIED", "", now_unix_ms).await?;
        applied += 1;
    }
}

async fn set_state(
    connection: &mut AnyConnection,
    consumer: &str,
    event_id: &str,
    state: &str,
    payload_hex: &str,
    applied_at_unix_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE inbox SET state = $1, payload_hex = $2, applied_at_unix_ms = $3 WHERE consumer = $4 AND event_id = $5",
    )
    .bind(state)
    .bind(payload_hex)
    .bind(applied_at_unix_ms)
    .bind(consumer)
    .bind(event_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

fn shipment_from_row(row: &AnyRow) -> Result<Shipment, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Shipment {
        shipment_id: row.try_get("shipment_id")?,
        order_id: row.try_get("order_id")?,
        user_id: row.try_get("user_id")?,
        status: ShipmentStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown shipment status {status:?}")))?,
        tracking_number: row.try_get("tracking_number")?,
        created_at_unix_ms: row.try_get("created_at_unix_ms")?,
        updated_at_unix_ms: row.try_get("updated_at_unix_ms")?,
        shipped_at_unix_ms: row.try_get("shipped_at_unix_ms")?,
        lines: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &std::path::Path) -> Store {
        let pool = mesh::storage::open("shipping", None, dir, &crate::MIGRATOR)
            .await
            .expect("open the shipping database");
        Store::new(pool)
    }

    fn confirmed(order_id: &str) -> OrderEvent {
        OrderEvent::Confirmed {
            order_id: order_id.into(),
            user_id: "u_1".into(),
            lines: vec![Line {
                sku: "WIDGET-1".into(),
                quantity: 2,
            }],
            sequence: 1,
        }
    }

    fn cancelled(order_id: &str) -> OrderEvent {
        OrderEvent::Cancelled {
            order_id: order_id.into(),
            sequence: 2,
        }
    }

    fn body(event: &OrderEvent) -> (String, Vec<u8>) {
        use mesh::proto::events::v1::{OrderCancelled, OrderConfirmed, OrderLine};
        use prost::Message;
        match event {
            OrderEvent::Confirmed {
                order_id,
                user_id,
                lines,
                sequence,
            } => (
                domain::event_types::CONFIRMED.into(),
                OrderConfirmed {
                    order_id: order_id.clone(),
                    user_id: user_id.clone(),
                    lines: lines
                        .iter()
                        .map(|line| OrderLine {
                            sku: line.sku.clone(),
                            quantity: line.quantity,
                            unit_price_cents: 1,
                        })
                        .collect(),
                    sequence: *sequence as u64,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            OrderEvent::Cancelled { order_id, sequence } => (
                domain::event_types::CANCELLED.into(),
                OrderCancelled {
                    order_id: order_id.clone(),
                    sequence: *sequence as u64,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            OrderEvent::Rejected { .. } => unreachable!(),
        }
    }

    async fn handle(store: &Store, event_id: &str, event: &OrderEvent, at: i64) -> Handled {
        let (event_type, body) = body(event);
        store
            .handle(
                "shipping",
                &Received {
                    event_id,
                    event_type: &event_type,
                    body: &body,
                    event,
                },
                move || at,
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_confirmation_creates_one_shipment_however_often_it_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        assert_eq!(
            handle(&store, "e1", &confirmed("ord_1"), 10).await,
            Handled::Applied
        );
        assert_eq!(
            handle(&store, "e1", &confirmed("ord_1"), 11).await,
            Handled::Duplicate
        );
        // The same event published twice under another id is older than what was applied.
        assert_eq!(
            handle(&store, "e1b", &confirmed("ord_1"), 12).await,
            Handled::Duplicate
        );
        let shipments = store.by_order("ord_1").await.unwrap();
        assert_eq!(shipments.len(), 1);
        assert_eq!(shipments[0].status, ShipmentStatus::Pending);
        assert_eq!(shipments[0].lines[0].quantity, 2);
        assert_eq!(shipments[0].created_at_unix_ms, 10);
    }

    #[tokio::test]
    async fn a_cancel_that_arrives_first_waits_for_its_confirmation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        assert_eq!(
            handle(&store, "c", &cancelled("ord_1"), 10).await,
            Handled::Waiting
        );
        assert!(
            store.by_order("ord_1").await.unwrap().is_empty(),
            "nothing applied yet"
        );
        assert_eq!(
            handle(&store, "c", &cancelled("ord_1"), 11).await,
            Handled::Duplicate
        );
        assert_eq!(
            handle(&store, "k", &confirmed("ord_1"), 20).await,
            Handled::Applied
        );
        let shipment = &store.by_order("ord_1").await.unwrap()[0];
        assert_eq!(shipment.status, ShipmentStatus::Cancelled);
        // Applied in sequence, in the confirmation's transaction.
        let rows: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT event_id, sequence, state FROM inbox ORDER BY sequence")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(
            rows,
            [
                ("k".to_owned(), 1, "APPLIED".to_owned()),
                ("c".to_owned(), 2, "APPLIED".to_owned())
            ]
        );
    }

    /// Seen in a 1000-run campaign: two instances, the cancel's time read
    /// before its write waited behind the confirmation's, so the cancel
    /// looked applied first. An instance whose clock lags (the same thing)
    /// still stamps an order's events in the order they were applied.
    #[tokio::test]
    async fn an_orders_events_carry_their_times_in_the_order_they_were_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        assert_eq!(
            handle(&store, "k", &confirmed("ord_1"), 100).await,
            Handled::Applied
        );
        assert_eq!(
            handle(&store, "c", &cancelled("ord_1"), 50).await,
            Handled::Applied
        );
        let times: Vec<(String, i64)> =
            sqlx::query_as("SELECT event_id, applied_at_unix_ms FROM inbox ORDER BY sequence")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(times, [("k".to_owned(), 100), ("c".to_owned(), 100)]);
    }

    #[tokio::test]
    async fn a_shipped_shipment_is_returned_not_cancelled_and_a_cancelled_one_never_ships() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        handle(&store, "k1", &confirmed("ord_1"), 10).await;
        handle(&store, "k2", &confirmed("ord_2"), 10).await;
        let first = domain::shipment_id_for("ord_1");
        let shipped = store.mark_shipped(&first, "1Z", 20).await.unwrap();
        assert_eq!(
            (shipped.status, shipped.shipped_at_unix_ms),
            (ShipmentStatus::Shipped, 20)
        );
        // Idempotent.
        assert_eq!(
            store
                .mark_shipped(&first, "1Z", 30)
                .await
                .unwrap()
                .shipped_at_unix_ms,
            20
        );
        handle(&store, "c1", &cancelled("ord_1"), 40).await;
        handle(&store, "c2", &cancelled("ord_2"), 40).await;
        assert_eq!(
            store.get(&first).await.unwrap().status,
            ShipmentStatus::ReturnRequested
        );
        let second = domain::shipment_id_for("ord_2");
        assert!(matches!(
            store.mark_shipped(&second, "1Z", 50).await,
            Err(StoreError::NotShippable {
                status: "CANCELLED",
                ..
            })
        ));
        assert!(matches!(
            store.get("shp_nope").await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_users_shipments_page_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        for (i, at) in [10, 20, 20, 30].into_iter().enumerate() {
            handle(
                &store,
                &format!("e{i}"),
                &confirmed(&format!("ord_{i}")),
                at,
            )
            .await;
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.by_user("u_1", after.as_ref(), 3).await.unwrap();
            if page.is_empty() {
                break;
            }
            let last = page.last().unwrap();
            after = Some(PageKey {
                created_at_unix_ms: last.created_at_unix_ms,
                shipment_id: last.shipment_id.clone(),
            });
            seen.extend(page.into_iter().map(|shipment| shipment.created_at_unix_ms));
        }
        assert_eq!(seen, [30, 20, 20, 10]);
    }
}
