//! The orders database (orders + order lines) over `sqlx::AnyPool`.
//!
//! The saga's writes are single conditional UPDATEs fenced by the lease:
//! `lease_owner = $me AND lease_version = $v AND status IN (PENDING,
//! CANCELLING)`. `lease_version` is a counter the database bumps at every
//! acquisition (not a clock), so a run whose lease expired and was taken over
//! can no longer write, whatever the clocks say; a multi-row write is one
//! write unit that starts with the fenced write. A step's write also renews
//! the lease (`lease_until_unix_ms`) in the same fenced statement, so a saga
//! step costs one write, not a renewal and a write.
//!
//! Every write goes through the database's group-commit writer
//! ([`mesh::storage::Writer`]; on a SQLite file its units run on the
//! database's own thread, `on_thread.rs`, with the statements of the pool's
//! units below): a saga step returns only once its write
//! is committed durably — before the remote call that depends on it — and
//! the steps of concurrent orders share that commit. A multi-row write is
//! one write unit (its own savepoint inside the writer's transaction), so it
//! is all or nothing.

use std::sync::OnceLock;

use futures::future::BoxFuture;
use mesh::storage::{GroupCommitOptions, ReadError, Reader, StorageError, WriteError, Writer};
use sqlx::{any::AnyRow, AnyConnection, AnyPool, Row};

use crate::domain::{
    charge_key_of, reservation_id_of, Item, KeySource, OrderStatus, PageKey, ParkReason, Step,
};

pub mod events;
mod handoff;
mod on_thread;
mod pending;

use events::{Cause, Kind, Wake};
pub use pending::Pending;

/// A stored order line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The SKU.
    pub sku: String,
    /// How many.
    pub quantity: i64,
    /// 0 until inventory priced it.
    pub unit_price_cents: i64,
}

/// A stored order with its saga bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// `ord_…`.
    pub order_id: String,
    /// The caller's idempotency key.
    pub request_id: String,
    /// Who ordered.
    pub user_id: String,
    /// Upper-case ISO 4217 code: the one asked (or empty) until priced, then
    /// the seller's.
    pub currency: String,
    /// Where the order is.
    pub status: OrderStatus,
    /// Where the saga is inside PENDING/CANCELLING.
    pub step: Step,
    /// Sum of the priced lines (0 until priced).
    pub total_cents: i64,
    /// The captured payment, once known.
    pub payment_id: String,
    /// Why it was (or is being) rejected; empty otherwise.
    pub rejection_reason: String,
    /// When it was placed.
    pub created_at_unix_ms: i64,
    /// How many of its reservations were released before the current one.
    pub reservation_attempt: i64,
    /// Where its idempotency keys come from.
    pub keys: KeySource,
    /// Runs in a row that ended without the order moving on.
    pub failed_runs: i64,
    /// Set while the order waits for an operator.
    pub parked: Option<Parked>,
    /// The lines, in the order they were requested.
    pub lines: Vec<Line>,
}

/// Why and since when an order waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// The kind.
    pub reason: ParkReason,
    /// What the saga found, in words.
    pub detail: String,
    /// When it was parked.
    pub at_unix_ms: i64,
}

impl Order {
    /// The payments idempotency key of this order's charge.
    pub fn charge_key(&self) -> String {
        charge_key_of(self.keys, &self.order_id, &self.request_id)
    }

    /// The id of this order's current inventory reservation.
    pub fn reservation_id(&self) -> String {
        reservation_id_of(
            self.keys,
            &self.order_id,
            &self.request_id,
            self.reservation_attempt,
        )
    }

    /// The lines as requested (without prices).
    pub fn items(&self) -> Vec<Item> {
        self.lines
            .iter()
            .map(|line| Item {
                sku: line.sku.clone(),
                quantity: line.quantity,
            })
            .collect()
    }
}

/// A new order to record as PENDING.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    /// `ord_…`.
    pub order_id: &'a str,
    /// The caller's idempotency key.
    pub request_id: &'a str,
    /// Who orders.
    pub user_id: &'a str,
    /// Upper-case currency asked for, or empty.
    pub currency: &'a str,
    /// The lines.
    pub items: &'a [Item],
    /// When.
    pub now_unix_ms: i64,
}

impl NewOrder<'_> {
    /// The order as [`Store::insert_pending`] records it: PENDING at
    /// RESERVE, unpriced, keys from its own id.
    fn as_recorded(&self) -> Order {
        Order {
            order_id: self.order_id.to_owned(),
            request_id: self.request_id.to_owned(),
            user_id: self.user_id.to_owned(),
            currency: self.currency.to_owned(),
            status: OrderStatus::Pending,
            step: Step::Reserve,
            total_cents: 0,
            payment_id: String::new(),
            rejection_reason: String::new(),
            created_at_unix_ms: self.now_unix_ms,
            reservation_attempt: 0,
            keys: KeySource::OrderId,
            failed_runs: 0,
            parked: None,
            lines: self
                .items
                .iter()
                .map(|item| Line {
                    sku: item.sku.clone(),
                    quantity: item.quantity,
                    unit_price_cents: 0,
                })
                .collect(),
        }
    }
}

/// What RESERVE → CHARGE records ([`Store::priced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// Inventory's unit price of each SKU.
    pub prices: Vec<(String, i64)>,
    /// The reservation's total.
    pub total_cents: i64,
    /// The seller's currency.
    pub currency: String,
    /// When.
    pub now_unix_ms: i64,
    /// The lease, renewed by the same write.
    pub lease_until_unix_ms: i64,
}

/// The right to write an order's saga state: who holds its lease, and the
/// lease's version (the fencing token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The order.
    pub order_id: String,
    /// The run holding the lease.
    pub owner: String,
    /// The lease version this run got.
    pub version: i64,
    /// Until when the lease was taken (the store's answer when it leased the
    /// order; the saga tracks its renewals itself).
    pub lease_until_unix_ms: i64,
}

/// What `insert_pending` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The order was recorded, leased to the caller.
    New(Order, Fence),
    /// An order with this `request_id` already existed: here it is.
    Existing(Order),
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No order has this id.
    #[error("order {order_id} not found")]
    NotFound {
        /// The id asked for.
        order_id: String,
    },
    /// The saga run no longer holds the order (its lease expired and another
    /// run took over, or the order left PENDING/CANCELLING).
    #[error("order {order_id} is being worked on by another run")]
    LeaseLost {
        /// The order.
        order_id: String,
    },
    /// The order is not parked (any more), or a run holds it.
    #[error(
        "order {order_id} is not parked (only a parked order can be retried or resolved by hand)"
    )]
    NotParked {
        /// The order.
        order_id: String,
    },
    /// A row the code cannot interpret.
    #[error("corrupt orders row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database failed (a unit on SQLite's writer thread).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The write was not committed (a full queue, a failed batch).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The read did not run (its queue was full, the readers stopped).
    #[error(transparent)]
    Read(#[from] ReadError),
}

const COLUMNS: &str = "order_id, request_id, user_id, currency, status, step, total_cents, payment_id, rejection_reason, created_at_unix_ms, reservation_attempt, saga_keys, failed_runs, parked_reason, parked_detail, parked_at_unix_ms";

/// The order of a request id (`$1`).
static BY_REQUEST: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM orders WHERE request_id = $1"));

/// The fencing condition of every saga write (`$F1` owner, `$F2` version).
const FENCED: &str =
    "lease_owner = $F1 AND lease_version = $F2 AND status IN ('PENDING', 'CANCELLING')";

/// The orders database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    writer: Writer,
    /// The hot reads: a SQLite file's on its reader threads.
    reader: Reader,
    /// With the outbox on: whom to wake when an event was committed.
    outbox: Option<Wake>,
}

impl Store {
    /// A store over an open, migrated pool, without the outbox (no events);
    /// starts the database's writer (call inside a Tokio runtime).
    pub fn new(pool: AnyPool) -> Result<Self, StorageError> {
        Self::start(pool, None)
    }

    /// A store that records the events of final states in the outbox, in
    /// the state change's write unit, and wakes `wake` once that unit's
    /// commit is acknowledged; starts the database's writer (call inside a
    /// Tokio runtime).
    pub fn with_outbox(pool: AnyPool, wake: Wake) -> Result<Self, StorageError> {
        Self::start(pool, Some(wake))
    }

    fn start(pool: AnyPool, outbox: Option<Wake>) -> Result<Self, StorageError> {
        let writer = Writer::start("orders", &pool, GroupCommitOptions::default())?;
        let reader = Reader::start("orders", &pool)?;
        Ok(Self {
            pool,
            writer,
            reader,
            outbox,
        })
    }

    /// The pool (for the outbox relay).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs `unit` in the writer's next batch; answers once it is
    /// committed: `on_thread` on a SQLite file's writer thread, `on_pool`
    /// through the pool's writer (the same statements).
    async fn write<T, S, P>(&self, on_thread: S, on_pool: P) -> Result<T, StoreError>
    where
        S: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
        P: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
        T: Send + 'static,
    {
        match &self.writer {
            Writer::Sqlite(writer) => writer.write(on_thread).await,
            Writer::Pool(writer) => writer.write(on_pool).await,
        }
    }

    /// Records `order` as PENDING at step RESERVE, leased to `owner` until
    /// `lease_until`, with its lines — in one transaction — unless its
    /// `request_id` is taken: then returns that order.
    pub async fn insert_pending(
        &self,
        order: &NewOrder<'_>,
        owner: &str,
        lease_until_unix_ms: i64,
    ) -> Result<Inserted, StoreError> {
        let row = PendingRow {
            order_id: order.order_id.to_owned(),
            request_id: order.request_id.to_owned(),
            user_id: order.user_id.to_owned(),
            currency: order.currency.to_owned(),
            items: order.items.to_vec(),
            now_unix_ms: order.now_unix_ms,
            owner: owner.to_owned(),
            lease_until_unix_ms,
        };
        let row = std::sync::Arc::new(row);
        let on_pool = row.clone();
        let inserted = self
            .write(
                move |connection| on_thread::insert_pending(connection, &row),
                move |connection| Box::pin(insert_pending_in(connection, on_pool)),
            )
            .await?;
        if !inserted {
            let existing = self
                .find_by_request(order.request_id)
                .await?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "request_id {} conflicts but no order has it",
                        order.request_id
                    ))
                })?;
            return Ok(Inserted::Existing(existing));
        }
        let fence = Fence {
            order_id: order.order_id.to_owned(),
            owner: owner.to_owned(),
            version: 1,
            lease_until_unix_ms,
        };
        // The row is exactly what was written: no read back.
        Ok(Inserted::New(order.as_recorded(), fence))
    }

    /// One order.
    pub async fn get(&self, order_id: &str) -> Result<Order, StoreError> {
        match &self.reader {
            Reader::Sqlite(reader) => {
                let order_id = order_id.to_owned();
                reader
                    .read(move |connection| on_thread::read_order(connection, &order_id))
                    .await
            }
            Reader::Pool(pool) => {
                let mut connection = pool.acquire().await?;
                read_order(&mut connection, order_id).await
            }
        }
    }

    /// The order placed by `request_id`, if any.
    pub async fn find_by_request(&self, request_id: &str) -> Result<Option<Order>, StoreError> {
        let pool = match &self.reader {
            Reader::Sqlite(reader) => {
                let request_id = request_id.to_owned();
                return reader
                    .read(move |connection| on_thread::find_by_request(connection, &request_id))
                    .await;
            }
            Reader::Pool(pool) => pool,
        };
        let row = sqlx::query(&BY_REQUEST)
            .bind(request_id)
            .fetch_optional(pool)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(self.with_lines(order_from_row(&row)?).await?)),
        }
    }

    /// A page of `user_id`'s orders, newest first, after `after` (exclusive).
    /// Returns up to `limit` orders.
    pub async fn list(
        &self,
        user_id: &str,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let rows = match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM orders WHERE user_id = $1 \
                     ORDER BY created_at_unix_ms DESC, order_id DESC LIMIT $2"
                ))
                .bind(user_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Some(key) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM orders WHERE user_id = $1 \
                     AND (created_at_unix_ms < $2 OR (created_at_unix_ms = $2 AND order_id < $3)) \
                     ORDER BY created_at_unix_ms DESC, order_id DESC LIMIT $4"
                ))
                .bind(user_id)
                .bind(key.created_at_unix_ms)
                .bind(&key.order_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut orders = Vec::with_capacity(rows.len());
        for row in &rows {
            orders.push(self.with_lines(order_from_row(row)?).await?);
        }
        Ok(orders)
    }

    /// Up to `limit` unfinished orders (PENDING or CANCELLING), not parked,
    /// whose lease is free or expired and whose next attempt is due at
    /// `now_unix_ms`, the longest due first: the recovery loop's work list.
    /// An order a run could not finish waits for its next attempt (a
    /// backoff per order), so orders that keep failing cannot take every
    /// round.
    pub async fn unfinished(
        &self,
        now_unix_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT order_id FROM orders WHERE status IN ('PENDING', 'CANCELLING') \
             AND parked_reason = '' AND next_attempt_unix_ms <= $1 AND lease_until_unix_ms <= $1 \
             ORDER BY next_attempt_unix_ms, updated_at_unix_ms LIMIT $2",
        )
        .bind(now_unix_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Leases an unfinished, unparked order to `owner` until `lease_until`
    /// if no live lease holds it, bumping its lease version. Returns the
    /// fence, or `None` when another run holds it, it is parked, or it is
    /// finished.
    pub async fn try_lease(
        &self,
        order_id: &str,
        owner: &str,
        now_unix_ms: i64,
        lease_until_unix_ms: i64,
    ) -> Result<Option<Fence>, StoreError> {
        let (order_id_owned, owner_owned) = (order_id.to_owned(), owner.to_owned());
        let args = mesh::storage::NumberedArgs::new()
            .arg(owner_owned.clone())
            .arg(lease_until_unix_ms)
            .arg(order_id_owned.clone())
            .arg(now_unix_ms);
        let version: Option<i64> = self
            .write(
                move |connection| Ok(args.first_row(connection, TRY_LEASE, |row| row.get(0))?),
                move |connection| {
                    Box::pin(async move {
                        Ok(sqlx::query_scalar(TRY_LEASE)
                            .bind(owner_owned)
                            .bind(lease_until_unix_ms)
                            .bind(order_id_owned)
                            .bind(now_unix_ms)
                            .fetch_optional(&mut *connection)
                            .await?)
                    })
                },
            )
            .await?;
        Ok(version.map(|version| Fence {
            order_id: order_id.to_owned(),
            owner: owner.to_owned(),
            version,
            lease_until_unix_ms,
        }))
    }

    /// Extends the lease. A step's own write renews it too (see
    /// [`Store::priced`]); a run renews on its own only before a step that
    /// does not follow such a write (a resumed order, a retry after a pause).
    pub async fn renew(&self, fence: &Fence, lease_until_unix_ms: i64) -> Result<(), StoreError> {
        self.fenced(
            fence,
            "lease_until_unix_ms = $1",
            &[Int(lease_until_unix_ms)],
        )
        .await
    }

    /// Gives the lease up (no-op if the fence is stale).
    pub async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        let fence = fence.clone();
        let args = fence_args(mesh::storage::NumberedArgs::new(), &fence);
        self.write(
            move |connection| {
                args.execute(connection, RELEASE_LEASE)?;
                Ok(())
            },
            move |connection| {
                Box::pin(async move {
                    sqlx::query(RELEASE_LEASE)
                        .bind(&fence.order_id)
                        .bind(&fence.owner)
                        .bind(fence.version)
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            },
        )
        .await
    }

    /// Gives the lease up after a run that could not finish the order: one
    /// more failed run, and no attempt before `backoff(failed runs)` ms from
    /// `now_unix_ms` (no-op if the fence is stale).
    pub async fn defer(
        &self,
        fence: &Fence,
        now_unix_ms: i64,
        backoff_ms: impl Fn(i64) -> i64 + Send + Sync + 'static,
    ) -> Result<(), StoreError> {
        let fence = fence.clone();
        let backoff_ms = std::sync::Arc::new(backoff_ms);
        let (thread_fence, thread_backoff) = (fence.clone(), backoff_ms.clone());
        self.write(
            move |connection| {
                on_thread::defer(connection, &thread_fence, now_unix_ms, &*thread_backoff)
            },
            move |connection| {
                Box::pin(async move {
                    let failed: Option<i64> = sqlx::query_scalar(DEFER_READ)
                        .bind(&fence.order_id)
                        .bind(&fence.owner)
                        .bind(fence.version)
                        .fetch_optional(&mut *connection)
                        .await?;
                    let Some(failed) = failed else {
                        return Ok(());
                    };
                    let failed = failed.saturating_add(1);
                    sqlx::query(DEFER_WRITE)
                        .bind(failed)
                        .bind(now_unix_ms.saturating_add(backoff_ms(failed)))
                        .bind(&fence.order_id)
                        .bind(&fence.owner)
                        .bind(fence.version)
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            },
        )
        .await
    }

    /// Parks the order for an operator (and gives the lease up): recovery
    /// skips it until [`Store::unpark`] or [`Store::resolve`]. Returns
    /// whether this call parked it (false: the fence is stale).
    pub async fn park(
        &self,
        fence: &Fence,
        reason: ParkReason,
        detail: &str,
        now_unix_ms: i64,
    ) -> Result<bool, StoreError> {
        let (fence, detail) = (fence.clone(), detail.to_owned());
        let args = fence_args(
            mesh::storage::NumberedArgs::new()
                .arg(reason.as_str().to_owned())
                .arg(detail.clone())
                .arg(now_unix_ms),
            &fence,
        );
        let updated = self
            .write(
                move |connection| Ok(args.execute(connection, park_sql())? as u64),
                move |connection| {
                    Box::pin(async move {
                        let done = sqlx::query(park_sql())
                            .bind(reason.as_str())
                            .bind(&detail)
                            .bind(now_unix_ms)
                            .bind(&fence.order_id)
                            .bind(&fence.owner)
                            .bind(fence.version)
                            .execute(&mut *connection)
                            .await?;
                        Ok(done.rows_affected())
                    })
                },
            )
            .await?;
        Ok(updated == 1)
    }

    /// Unparks the order (an operator fixed what it waited for): due at
    /// once, its failed runs forgotten. Fails with [`StoreError::NotParked`]
    /// unless it is parked.
    pub async fn unpark(&self, order_id: &str, now_unix_ms: i64) -> Result<(), StoreError> {
        let order_id_owned = order_id.to_owned();
        let args = mesh::storage::NumberedArgs::new()
            .arg(now_unix_ms)
            .arg(order_id_owned.clone());
        let updated = self
            .write(
                move |connection| Ok(args.execute(connection, UNPARK)? as u64),
                move |connection| {
                    Box::pin(async move {
                        let done = sqlx::query(UNPARK)
                            .bind(now_unix_ms)
                            .bind(order_id_owned)
                            .execute(&mut *connection)
                            .await?;
                        Ok(done.rows_affected())
                    })
                },
            )
            .await?;
        self.parked_or_missing(updated, order_id).await
    }

    /// Closes a parked order by hand: `status` (final), with `reason` as
    /// its rejection reason (empty unless REJECTED). Fails with
    /// [`StoreError::NotParked`] unless it is parked.
    pub async fn resolve(
        &self,
        order_id: &str,
        status: OrderStatus,
        reason: &str,
        now_unix_ms: i64,
    ) -> Result<Order, StoreError> {
        let (order_id_owned, reason) = (order_id.to_owned(), reason.to_owned());
        let event = self
            .outbox
            .as_ref()
            .map(|wake| Cause::capture(Kind::of_final(status), now_unix_ms, wake));
        let (thread_id, thread_reason, thread_event) =
            (order_id_owned.clone(), reason.clone(), event.clone());
        let resolved = self
            .write(
                move |connection| {
                    on_thread::resolve(
                        connection,
                        &thread_id,
                        status,
                        &thread_reason,
                        now_unix_ms,
                        thread_event,
                    )
                },
                move |connection| {
                    Box::pin(async move {
                        let Some(from) = parked_status_in(connection, &order_id_owned).await?
                        else {
                            return Ok(None);
                        };
                        let done = sqlx::query(RESOLVE)
                            .bind(status.as_str())
                            .bind(Step::Done.as_str())
                            .bind(&reason)
                            .bind(now_unix_ms)
                            .bind(&order_id_owned)
                            .bind(from.as_str())
                            .execute(&mut *connection)
                            .await?;
                        if done.rows_affected() != 1 {
                            return Ok(None);
                        }
                        let order = read_order(connection, &order_id_owned).await?;
                        let mut handed = None;
                        if let Some(event) = event.filter(|_| changes_for_consumers(from, status)) {
                            handed = events::record(connection, &order, &event).await?;
                        }
                        Ok(Some((order, handed)))
                    })
                },
            )
            .await?;
        let Some((order, handed)) = resolved else {
            return Err(self.not_parked(order_id).await);
        };
        self.wake_relay(handed);
        Ok(order)
    }

    /// `Ok` if `updated` is 1, else NotFound or NotParked.
    async fn parked_or_missing(&self, updated: u64, order_id: &str) -> Result<(), StoreError> {
        if updated == 1 {
            return Ok(());
        }
        Err(self.not_parked(order_id).await)
    }

    /// Why a change to the parked order `order_id` did not happen: it does
    /// not exist (NotFound), or it is not parked.
    async fn not_parked(&self, order_id: &str) -> StoreError {
        match self.get(order_id).await {
            Ok(_) => StoreError::NotParked {
                order_id: order_id.to_owned(),
            },
            Err(error) => error,
        }
    }

    /// Up to `limit` parked orders, longest parked first, after `after`
    /// (exclusive; its `created_at` field holds the parked time).
    pub async fn parked(
        &self,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let rows = match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM orders WHERE parked_reason > '' \
                     ORDER BY parked_at_unix_ms, order_id LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Some(key) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM orders WHERE parked_reason > '' \
                     AND (parked_at_unix_ms > $1 OR (parked_at_unix_ms = $1 AND order_id > $2)) \
                     ORDER BY parked_at_unix_ms, order_id LIMIT $3"
                ))
                .bind(key.created_at_unix_ms)
                .bind(&key.order_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut orders = Vec::with_capacity(rows.len());
        for row in &rows {
            orders.push(self.with_lines(order_from_row(row)?).await?);
        }
        Ok(orders)
    }

    /// How many orders are parked, by reason.
    pub async fn parked_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT parked_reason, COUNT(*) AS parked FROM orders WHERE parked_reason > '' GROUP BY parked_reason",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("parked_reason")?, row.try_get("parked")?)))
            .collect()
    }

    /// RESERVE: moves to reservation `attempt` (the previous one was
    /// released), renewing the lease until `lease_until`.
    pub async fn next_attempt(
        &self,
        fence: &Fence,
        attempt: i64,
        now_unix_ms: i64,
        lease_until_unix_ms: i64,
    ) -> Result<(), StoreError> {
        self.fenced(
            fence,
            "reservation_attempt = $1, updated_at_unix_ms = $2, failed_runs = 0, lease_until_unix_ms = $3",
            &[Int(attempt), Int(now_unix_ms), Int(lease_until_unix_ms)],
        )
        .await
    }

    /// RESERVE → CHARGE: stores inventory's unit prices (by SKU), the total
    /// and the seller's currency, in one transaction, before any Charge;
    /// renews the lease until `priced.lease_until_unix_ms`.
    pub async fn priced(&self, fence: &Fence, priced: &Priced) -> Result<(), StoreError> {
        let fence = fence.clone();
        let Priced {
            prices,
            total_cents,
            currency,
            now_unix_ms,
            lease_until_unix_ms,
        } = priced.clone();
        let thread_fence = fence.clone();
        let thread_priced = priced.clone();
        self.write(
            move |connection| on_thread::priced(connection, &thread_fence, &thread_priced),
            move |connection| {
                Box::pin(async move {
                    let bind_step = |sql: &'static str| {
                        sqlx::query(sql)
                            .bind(Step::Charge.as_str())
                            .bind(total_cents)
                            .bind(&currency)
                            .bind(now_unix_ms)
                            .bind(lease_until_unix_ms)
                            .bind(&fence.order_id)
                            .bind(&fence.owner)
                            .bind(fence.version)
                    };
                    let updated = bind_step(priced_sql())
                        .execute(&mut *connection)
                        .await?
                        .rows_affected();
                    // Nothing written yet: the unit's savepoint has nothing to undo.
                    leased(updated, &fence.order_id)?;
                    for (sku, price) in &prices {
                        sqlx::query(PRICE_LINE)
                            .bind(price)
                            .bind(&fence.order_id)
                            .bind(sku)
                            .execute(&mut *connection)
                            .await?;
                    }
                    Ok(())
                })
            },
        )
        .await
    }

    /// CHARGE → COMMIT: the captured payment; renews the lease until
    /// `lease_until`.
    pub async fn captured(
        &self,
        fence: &Fence,
        payment_id: &str,
        now_unix_ms: i64,
        lease_until_unix_ms: i64,
    ) -> Result<(), StoreError> {
        self.fenced(
            fence,
            "step = $1, payment_id = $2, updated_at_unix_ms = $3, failed_runs = 0, lease_until_unix_ms = $4",
            &[
                Text(Step::Commit.as_str()),
                Text(payment_id),
                Int(now_unix_ms),
                Int(lease_until_unix_ms),
            ],
        )
        .await
    }

    /// → UNDO: the order will be rejected for `reason` once its payment (if
    /// captured) is refunded and its reservation released; renews the lease
    /// until `lease_until`.
    pub async fn undo(
        &self,
        fence: &Fence,
        reason: &str,
        now_unix_ms: i64,
        lease_until_unix_ms: i64,
    ) -> Result<(), StoreError> {
        self.fenced(
            fence,
            "step = $1, rejection_reason = $2, updated_at_unix_ms = $3, failed_runs = 0, lease_until_unix_ms = $4",
            &[
                Text(Step::Undo.as_str()),
                Text(reason),
                Int(now_unix_ms),
                Int(lease_until_unix_ms),
            ],
        )
        .await
    }

    /// PENDING → CONFIRMED (a rejection reason recorded by UNDO is cleared:
    /// the sale happened after all).
    pub async fn confirm(
        &self,
        fence: &Fence,
        order: &Order,
        now_unix_ms: i64,
    ) -> Result<Order, StoreError> {
        self.finish(fence, order, OrderStatus::Confirmed, Some(""), now_unix_ms)
            .await
    }

    /// PENDING → REJECTED with `reason` (nothing is held any more).
    pub async fn reject(
        &self,
        fence: &Fence,
        order: &Order,
        reason: &str,
        now_unix_ms: i64,
    ) -> Result<Order, StoreError> {
        self.finish(
            fence,
            order,
            OrderStatus::Rejected,
            Some(reason),
            now_unix_ms,
        )
        .await
    }

    /// CANCELLING → CANCELLED.
    pub async fn cancelled(
        &self,
        fence: &Fence,
        order: &Order,
        now_unix_ms: i64,
    ) -> Result<Order, StoreError> {
        self.finish(fence, order, OrderStatus::Cancelled, None, now_unix_ms)
            .await
    }

    /// CONFIRMED → CANCELLING at step CANCEL (before any refund or
    /// restock). Returns whether this call changed it.
    pub async fn request_cancel(
        &self,
        order_id: &str,
        now_unix_ms: i64,
    ) -> Result<bool, StoreError> {
        let order_id = order_id.to_owned();
        let args = mesh::storage::NumberedArgs::new()
            .arg(OrderStatus::Cancelling.as_str().to_owned())
            .arg(Step::Cancel.as_str().to_owned())
            .arg(now_unix_ms)
            .arg(order_id.clone())
            .arg(OrderStatus::Confirmed.as_str().to_owned());
        let updated = self
            .write(
                move |connection| Ok(args.execute(connection, REQUEST_CANCEL)? as u64),
                move |connection| {
                    Box::pin(async move {
                        let done = sqlx::query(REQUEST_CANCEL)
                            .bind(OrderStatus::Cancelling.as_str())
                            .bind(Step::Cancel.as_str())
                            .bind(now_unix_ms)
                            .bind(&order_id)
                            .bind(OrderStatus::Confirmed.as_str())
                            .execute(&mut *connection)
                            .await?;
                        Ok(done.rows_affected())
                    })
                },
            )
            .await?;
        Ok(updated == 1)
    }

    /// The unfinished order → a final `status` (step DONE), frees the lease.
    /// `order` is the order as the saga holds it (read with its lines, and
    /// prices are written only under its fence): the final order is the
    /// written row with its lines, not read again. With the outbox on, the
    /// order's event is recorded in the same write unit; on SQLite the write
    /// and an order's first event are one query (events.rs, `FirstEvent`),
    /// the event's body predicted from `order` and checked against the row
    /// as written.
    async fn finish(
        &self,
        fence: &Fence,
        order: &Order,
        status: OrderStatus,
        reason: Option<&str>,
        now_unix_ms: i64,
    ) -> Result<Order, StoreError> {
        // Captured here: the unit runs on the writer's task, not in the
        // caller's span.
        let event = self
            .outbox
            .as_ref()
            .map(|wake| Cause::capture(Kind::of_final(status), now_unix_ms, wake));
        let mut values = vec![
            Text(status.as_str()),
            Text(Step::Done.as_str()),
            Int(now_unix_ms),
        ];
        values.extend(reason.map(Text));
        let sql = FinishShape {
            reason: reason.is_some(),
            event: event.is_some(),
        }
        .sql();
        let values: Vec<OwnedValue> = values.iter().map(Value::to_owned).collect();
        let fence = fence.clone();
        let saga_order = order.clone();
        let thread_args = fence_args(
            values
                .iter()
                .fold(mesh::storage::NumberedArgs::new(), |args, value| {
                    args.arg(value.to_sql_value())
                }),
            &fence,
        );
        let (thread_lines, thread_event, thread_fence) = (
            saga_order.lines.clone(),
            event.clone(),
            fence.order_id.clone(),
        );
        // The state and its event in one write unit (one savepoint of the
        // writer's transaction): never one without the other.
        let (order, handed) = self
            .write(
                move |connection| {
                    on_thread::finish(
                        connection,
                        sql,
                        &thread_args,
                        &thread_fence,
                        thread_lines,
                        thread_event,
                    )
                },
                move |connection| {
                    Box::pin(async move {
                        // The final row as the fenced write left it (RETURNING:
                        // no second statement to read it).
                        let row = fenced_query(sql, &values, &fence)
                            .fetch_optional(&mut *connection)
                            .await?
                            .ok_or_else(|| StoreError::LeaseLost {
                                order_id: fence.order_id.clone(),
                            })?;
                        let mut order = order_from_row(&row)?;
                        order.lines = saga_order.lines;
                        let handed = match event {
                            None => None,
                            Some(cause) => {
                                let sequence: i64 = row.try_get("event_sequence")?;
                                events::record_numbered(connection, &order, &cause, sequence)
                                    .await?
                            }
                        };
                        Ok((order, handed))
                    })
                },
            )
            .await?;
        self.wake_relay(handed);
        Ok(order)
    }

    /// Wakes the relay (if the outbox is on), handing it the order's lease
    /// and the event when the unit took the lease for it (`handed`): called
    /// once a unit that may have recorded an event is acknowledged, so after
    /// its durable commit. The relay reads the outbox unless the hand-off
    /// lets it publish the event from memory.
    fn wake_relay(&self, handed: Option<events::Handed>) {
        if let Some(wake) = &self.outbox {
            match handed.map(|handed| wake.hand_over(handed)) {
                Some(true) => wake.notify(),
                Some(false) | None => wake.notify_read(),
            }
        }
    }

    /// The database's readers (for the outbox relay's reads).
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The database's group-commit writer (the relay's bookkeeping shares
    /// its commits with the saga's writes).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// `UPDATE orders SET <set> WHERE <fenced>`, `values` bound to the
    /// `$1…$n` of `set`; the order id and fence follow them.
    async fn fenced(
        &self,
        fence: &Fence,
        set: &str,
        values: &[Value<'_>],
    ) -> Result<(), StoreError> {
        let sql = fenced_sql(set, values.len() + 1);
        let args = fence_args(
            values
                .iter()
                .fold(mesh::storage::NumberedArgs::new(), |args, value| {
                    args.arg(value.to_owned().to_sql_value())
                }),
            fence,
        );
        let values: Vec<OwnedValue> = values.iter().map(Value::to_owned).collect();
        let fence = fence.clone();
        let thread_sql = sql.clone();
        let order_id = fence.order_id.clone();
        self.write(
            move |connection| {
                let updated = args.execute(connection, &thread_sql)?;
                leased(updated as u64, &order_id)
            },
            move |connection| {
                Box::pin(async move { fenced_in(connection, &sql, &values, &fence).await })
            },
        )
        .await
    }
}

/// Runs `sql` (from [`fenced_sql`]) with `values` and the fence bound, on
/// the unit's `connection`; [`StoreError::LeaseLost`] (nothing written)
/// unless it updated the order.
async fn fenced_in(
    connection: &mut AnyConnection,
    sql: &str,
    values: &[OwnedValue],
    fence: &Fence,
) -> Result<(), StoreError> {
    let updated = fenced_query(sql, values, fence)
        .execute(&mut *connection)
        .await?
        .rows_affected();
    leased(updated, &fence.order_id)
}

/// `sql` (from [`fenced_sql`]) with `values`, then the order id and the
/// fence, bound.
fn fenced_query<'q>(
    sql: &'q str,
    values: &'q [OwnedValue],
    fence: &'q Fence,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let mut query = sqlx::query(sql);
    for value in values {
        query = match value {
            OwnedValue::Text(text) => query.bind(text.as_str()),
            OwnedValue::Int(number) => query.bind(*number),
        };
    }
    query
        .bind(fence.order_id.as_str())
        .bind(fence.owner.as_str())
        .bind(fence.version)
}

/// The status of `order_id` if it is parked (and so PENDING or CANCELLING),
/// read on the unit's `connection`.
async fn parked_status_in(
    connection: &mut AnyConnection,
    order_id: &str,
) -> Result<Option<OrderStatus>, StoreError> {
    let status: Option<String> = sqlx::query_scalar(PARKED_STATUS)
        .bind(order_id)
        .fetch_optional(&mut *connection)
        .await?;
    status.map(|status| parse_status(&status)).transpose()
}

/// A stored order status.
fn parse_status(status: &str) -> Result<OrderStatus, StoreError> {
    OrderStatus::parse(status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown order status {status:?}")))
}

/// One order with its lines, read on `connection` (in a transaction, it
/// sees the transaction's writes).
async fn read_order(connection: &mut AnyConnection, order_id: &str) -> Result<Order, StoreError> {
    let row = sqlx::query(order_sql())
        .bind(order_id)
        .fetch_optional(&mut *connection)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            order_id: order_id.to_owned(),
        })?;
    let mut order = order_from_row(&row)?;
    order.lines = lines_of(connection, order_id).await?;
    Ok(order)
}

async fn lines_of(connection: &mut AnyConnection, order_id: &str) -> Result<Vec<Line>, StoreError> {
    let rows = sqlx::query(LINES_OF)
        .bind(order_id)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            Ok(Line {
                sku: row.try_get("sku")?,
                quantity: row.try_get("quantity")?,
                unit_price_cents: row.try_get("unit_price_cents")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

impl Store {
    async fn with_lines(&self, mut order: Order) -> Result<Order, StoreError> {
        let mut connection = self.pool.acquire().await?;
        order.lines = lines_of(&mut connection, &order.order_id).await?;
        Ok(order)
    }
}

/// A value bound to a fenced update.
enum Value<'a> {
    Text(&'a str),
    Int(i64),
}
use Value::{Int, Text};

impl Value<'_> {
    fn to_owned(&self) -> OwnedValue {
        match self {
            Text(text) => OwnedValue::Text((*text).to_owned()),
            Int(number) => OwnedValue::Int(*number),
        }
    }
}

/// A [`Value`] the writer task can own.
enum OwnedValue {
    Text(String),
    Int(i64),
}

impl OwnedValue {
    /// The value for a unit on SQLite's writer thread.
    fn to_sql_value(&self) -> rusqlite::types::Value {
        match self {
            OwnedValue::Text(text) => rusqlite::types::Value::Text(text.clone()),
            OwnedValue::Int(number) => rusqlite::types::Value::Integer(*number),
        }
    }
}

/// `args` followed by `fence`'s order id, owner and version (the order of
/// [`fenced_sql`]'s and the lease statements' arguments).
fn fence_args(args: mesh::storage::NumberedArgs, fence: &Fence) -> mesh::storage::NumberedArgs {
    args.arg(fence.order_id.clone())
        .arg(fence.owner.clone())
        .arg(fence.version)
}

/// Whether resolving an order that was `from` as `to` is news for the
/// event's consumers: a CANCELLING order resolved CONFIRMED is, for them,
/// the confirmed order they already know.
fn changes_for_consumers(from: OrderStatus, to: OrderStatus) -> bool {
    !(from == OrderStatus::Cancelling && to == OrderStatus::Confirmed)
}

/// [`Store::try_lease`]: $1 owner, $2 until, $3 order, $4 now; the new
/// lease version back.
const TRY_LEASE: &str = "UPDATE orders SET lease_owner = $1, lease_until_unix_ms = $2, lease_version = lease_version + 1 \
     WHERE order_id = $3 AND status IN ('PENDING', 'CANCELLING') AND parked_reason = '' \
     AND (lease_until_unix_ms <= $4 OR lease_owner = '') \
     RETURNING lease_version";

/// [`Store::release_lease`]: $1 order, $2 owner, $3 version.
const RELEASE_LEASE: &str = "UPDATE orders SET lease_owner = '', lease_until_unix_ms = 0 \
     WHERE order_id = $1 AND lease_owner = $2 AND lease_version = $3";

/// [`Store::defer`]'s read: $1 order, $2 owner, $3 version.
const DEFER_READ: &str =
    "SELECT failed_runs FROM orders WHERE order_id = $1 AND lease_owner = $2 AND lease_version = $3";

/// [`Store::defer`]'s write: $1 failed runs, $2 next attempt, $3 order, $4
/// owner, $5 version.
const DEFER_WRITE: &str = "UPDATE orders SET lease_owner = '', lease_until_unix_ms = 0, failed_runs = $1, next_attempt_unix_ms = $2 \
     WHERE order_id = $3 AND lease_owner = $4 AND lease_version = $5";

/// [`Store::park`]'s fenced write: $1 reason, $2 detail, $3 now, the fence
/// from $4.
fn park_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        fenced_sql(
            "parked_reason = $1, parked_detail = $2, parked_at_unix_ms = $3, updated_at_unix_ms = $3, lease_owner = '', lease_until_unix_ms = 0",
            4,
        )
    })
}

/// [`Store::unpark`]: $1 now, $2 order.
const UNPARK: &str = "UPDATE orders SET parked_reason = '', parked_detail = '', parked_at_unix_ms = 0, failed_runs = 0, next_attempt_unix_ms = 0, updated_at_unix_ms = $1 \
     WHERE order_id = $2 AND parked_reason > '' AND status IN ('PENDING', 'CANCELLING')";

/// [`Store::resolve`]'s write: $1 status, $2 step, $3 reason, $4 now, $5
/// order, $6 the status it was parked in.
const RESOLVE: &str = "UPDATE orders SET status = $1, step = $2, rejection_reason = $3, parked_reason = '', parked_detail = '', parked_at_unix_ms = 0, updated_at_unix_ms = $4, lease_owner = '', lease_until_unix_ms = 0 \
     WHERE order_id = $5 AND parked_reason > '' AND status = $6";

/// The status of a parked order: $1 the order.
const PARKED_STATUS: &str = "SELECT status FROM orders WHERE order_id = $1 AND parked_reason > '' AND status IN ('PENDING', 'CANCELLING')";

/// [`Store::request_cancel`]: $1 CANCELLING, $2 CANCEL, $3 now, $4 order,
/// $5 CONFIRMED.
const REQUEST_CANCEL: &str = "UPDATE orders SET status = $1, step = $2, updated_at_unix_ms = $3 WHERE order_id = $4 AND status = $5";

/// One line's price: $1 price, $2 order, $3 SKU.
const PRICE_LINE: &str =
    "UPDATE order_lines SET unit_price_cents = $1 WHERE order_id = $2 AND sku = $3";

/// One new line: $1 order, $2 line number, $3 SKU, $4 quantity.
const INSERT_LINE: &str = "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents) VALUES ($1, $2, $3, $4, 0)";

/// An order's lines in order: $1 the order.
const LINES_OF: &str =
    "SELECT sku, quantity, unit_price_cents FROM order_lines WHERE order_id = $1 ORDER BY line_no";

/// One order's row: $1 the order.
fn order_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| format!("SELECT {COLUMNS} FROM orders WHERE order_id = $1"))
}

/// What [`Store::insert_pending`] writes, owned by its write unit.
struct PendingRow {
    order_id: String,
    request_id: String,
    user_id: String,
    currency: String,
    items: Vec<Item>,
    now_unix_ms: i64,
    owner: String,
    lease_until_unix_ms: i64,
}

/// The order and its lines, unless its request id is taken (then nothing is
/// written and the answer is `false`).
async fn insert_pending_in(
    connection: &mut AnyConnection,
    row: std::sync::Arc<PendingRow>,
) -> Result<bool, StoreError> {
    let inserted = bind_pending(sqlx::query(INSERT_PENDING), &row)
        .execute(&mut *connection)
        .await?
        .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    for (line_no, item) in row.items.iter().enumerate() {
        sqlx::query(INSERT_LINE)
            .bind(&row.order_id)
            .bind(line_no as i64)
            .bind(&item.sku)
            .bind(item.quantity)
            .execute(&mut *connection)
            .await?;
    }
    Ok(true)
}

/// A new order's row, PENDING at step RESERVE and leased (`$1`–`$10`, see
/// [`bind_pending`]), unless its request id is taken.
const INSERT_PENDING: &str = "INSERT INTO orders (order_id, request_id, user_id, currency, status, step, total_cents, payment_id, rejection_reason, created_at_unix_ms, updated_at_unix_ms, reservation_attempt, lease_owner, lease_until_unix_ms, lease_version, saga_keys) \
     VALUES ($1, $2, $3, $4, $5, $6, 0, '', '', $7, $7, 0, $8, $9, 1, $10) \
     ON CONFLICT (request_id) DO NOTHING";

/// Binds [`INSERT_PENDING`]'s arguments.
fn bind_pending<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    row: &'q PendingRow,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&row.order_id)
        .bind(&row.request_id)
        .bind(&row.user_id)
        .bind(&row.currency)
        .bind(OrderStatus::Pending.as_str())
        .bind(Step::Reserve.as_str())
        .bind(row.now_unix_ms)
        .bind(&row.owner)
        .bind(row.lease_until_unix_ms)
        .bind(KeySource::OrderId.as_str())
}

/// What the final write's SQL depends on (`Store::finish`): whether it sets
/// a rejection reason and whether it numbers an event. Each shape's SQL is
/// built once, not at every order.
#[derive(Debug, Clone, Copy)]
struct FinishShape {
    reason: bool,
    event: bool,
}

impl FinishShape {
    fn index(self) -> usize {
        usize::from(self.reason) * 2 + usize::from(self.event)
    }

    /// The fenced final write, returning the row and its event number.
    fn sql(self) -> &'static str {
        static SQL: [OnceLock<String>; 4] = [const { OnceLock::new() }; 4];
        SQL[self.index()].get_or_init(|| {
            let mut set = String::from(
                "status = $1, step = $2, updated_at_unix_ms = $3, lease_owner = '', lease_until_unix_ms = 0",
            );
            if self.reason {
                set.push_str(", rejection_reason = $4");
            }
            if self.event {
                // The event's number comes from the same write (events.rs).
                set.push_str(", event_sequence = event_sequence + 1");
            }
            let fence_at = 4 + usize::from(self.reason);
            format!("{} RETURNING {COLUMNS}, event_sequence", fenced_sql(&set, fence_at))
        })
    }
}

/// The fenced write that records inventory's prices and moves the order to
/// CHARGE with a renewed lease (`$1`–`$5`, the fence from `$6`).
fn priced_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        fenced_sql(
            "step = $1, total_cents = $2, currency = $3, updated_at_unix_ms = $4, failed_runs = 0, lease_until_unix_ms = $5",
            6,
        )
    })
}

/// `UPDATE orders SET <set> WHERE order_id = $n AND <fence>`, the order id
/// and fence numbered from `first`.
fn fenced_sql(set: &str, first: usize) -> String {
    let condition = FENCED
        .replace("$F1", &format!("${}", first + 1))
        .replace("$F2", &format!("${}", first + 2));
    format!("UPDATE orders SET {set} WHERE order_id = ${first} AND {condition}")
}

fn leased(updated: u64, order_id: &str) -> Result<(), StoreError> {
    if updated == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost {
            order_id: order_id.to_owned(),
        })
    }
}

/// A row's columns by name, from the pool (`AnyRow`) or from SQLite's
/// writer thread (`rusqlite::Row`): one decoding of an order for both.
pub(crate) trait Columns {
    /// The text column `name`.
    fn text(&self, name: &str) -> Result<String, StoreError>;
    /// The integer column `name`.
    fn int(&self, name: &str) -> Result<i64, StoreError>;
}

impl Columns for AnyRow {
    fn text(&self, name: &str) -> Result<String, StoreError> {
        Ok(self.try_get(name)?)
    }

    fn int(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(name)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, name: &str) -> Result<String, StoreError> {
        Ok(self.get(name)?)
    }

    fn int(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.get(name)?)
    }
}

fn order_from_row(row: &impl Columns) -> Result<Order, StoreError> {
    let status = row.text("status")?;
    let step = row.text("step")?;
    let keys = row.text("saga_keys")?;
    let parked_reason = row.text("parked_reason")?;
    let parked = if parked_reason.is_empty() {
        None
    } else {
        Some(Parked {
            reason: ParkReason::parse(&parked_reason).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown parked reason {parked_reason:?}"))
            })?,
            detail: row.text("parked_detail")?,
            at_unix_ms: row.int("parked_at_unix_ms")?,
        })
    };
    Ok(Order {
        order_id: row.text("order_id")?,
        request_id: row.text("request_id")?,
        user_id: row.text("user_id")?,
        currency: row.text("currency")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown order status {status:?}")))?,
        step: Step::parse(&step)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown saga step {step:?}")))?,
        total_cents: row.int("total_cents")?,
        payment_id: row.text("payment_id")?,
        rejection_reason: row.text("rejection_reason")?,
        created_at_unix_ms: row.int("created_at_unix_ms")?,
        reservation_attempt: row.int("reservation_attempt")?,
        keys: KeySource::parse(&keys)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown saga keys {keys:?}")))?,
        failed_runs: row.int("failed_runs")?,
        parked,
        lines: Vec::new(),
    })
}

/// `fence`'s order as stored: what the saga holds when it finishes the
/// order (tests call the store's final writes with it).
#[cfg(test)]
pub(crate) async fn order_of_the(store: &Store, fence: &Fence) -> Order {
    store
        .get(&fence.order_id)
        .await
        .expect("the fenced order exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &std::path::Path) -> Store {
        let pool = mesh::storage::open("orders", None, dir, &crate::MIGRATOR)
            .await
            .expect("open the orders database");
        Store::new(pool).expect("start the orders writer")
    }

    fn items() -> Vec<Item> {
        vec![
            Item {
                sku: "apple".into(),
                quantity: 2,
            },
            Item {
                sku: "pear".into(),
                quantity: 1,
            },
        ]
    }

    async fn insert(
        store: &Store,
        order_id: &str,
        request_id: &str,
        user: &str,
        at: i64,
    ) -> Inserted {
        let items = items();
        store
            .insert_pending(
                &NewOrder {
                    order_id,
                    request_id,
                    user_id: user,
                    currency: "EUR",
                    items: &items,
                    now_unix_ms: at,
                },
                "owner-1",
                at + 1000,
            )
            .await
            .unwrap()
    }

    fn priced(now_unix_ms: i64, lease_until_unix_ms: i64) -> Priced {
        Priced {
            prices: vec![("apple".into(), 150), ("pear".into(), 200)],
            total_cents: 500,
            currency: "USD".into(),
            now_unix_ms,
            lease_until_unix_ms,
        }
    }

    fn fence_of(inserted: Inserted) -> (Order, Fence) {
        match inserted {
            Inserted::New(order, fence) => (order, fence),
            Inserted::Existing(order) => panic!("expected a new order, got {order:?}"),
        }
    }

    #[tokio::test]
    async fn an_order_is_recorded_pending_with_its_lines_once_per_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (order, fence) = fence_of(insert(&store, "ord_1", "r1", "u_1", 10).await);
        assert_eq!(order.status, OrderStatus::Pending);
        assert_eq!(order.step, Step::Reserve);
        assert_eq!(fence.version, 1);
        assert_eq!(order.items(), items());
        assert!(order.lines.iter().all(|line| line.unit_price_cents == 0));
        assert_eq!(order.reservation_attempt, 0);

        // A second insert with the same request_id returns the first order
        // and writes no lines under the second id.
        let again = insert(&store, "ord_2", "r1", "u_1", 20).await;
        assert_eq!(again, Inserted::Existing(order.clone()));
        assert!(matches!(
            store.get("ord_2").await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.find_by_request("r1").await.unwrap(), Some(order));
        assert_eq!(store.find_by_request("r2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn saga_writes_are_fenced_by_the_lease_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (_, first) = fence_of(insert(&store, "ord_1", "r1", "u_1", 10).await);

        // Another owner cannot take a live lease.
        assert_eq!(
            store
                .try_lease("ord_1", "owner-2", 500, 5000)
                .await
                .unwrap(),
            None
        );
        // It can once the lease has expired, with a higher version; the first
        // run's writes are then refused, even its renewals.
        let second = store
            .try_lease("ord_1", "owner-2", 1010, 5000)
            .await
            .unwrap()
            .expect("expired lease is taken");
        assert_eq!(second.version, 2);
        for stale in [
            store.next_attempt(&first, 1, 20, 9_000).await,
            store.renew(&first, 99_999).await,
            store.undo(&first, "late", 21, 9_000).await,
        ] {
            assert!(
                matches!(stale, Err(StoreError::LeaseLost { .. })),
                "{stale:?}"
            );
        }
        // Even the same owner with an old version is fenced out.
        let stale_same_owner = Fence {
            version: 1,
            ..second.clone()
        };
        assert!(matches!(
            store.captured(&stale_same_owner, "pay_x", 22, 9_000).await,
            Err(StoreError::LeaseLost { .. })
        ));

        store.next_attempt(&second, 1, 30, 5_030).await.unwrap();
        store.priced(&second, &priced(31, 5_031)).await.unwrap();
        let order = store.get("ord_1").await.unwrap();
        assert_eq!(
            (order.step, order.total_cents, order.currency.as_str()),
            (Step::Charge, 500, "USD")
        );
        assert_eq!(order.lines[0].unit_price_cents, 150);
        assert_eq!(order.lines[1].unit_price_cents, 200);
        assert_eq!(order.reservation_attempt, 1);
        store.captured(&second, "pay_1", 32, 5_032).await.unwrap();
        let confirmed = store
            .confirm(&second, &order_of_the(&store, &second).await, 40)
            .await
            .unwrap();
        assert_eq!(
            (confirmed.status, confirmed.step),
            (OrderStatus::Confirmed, Step::Done)
        );
        assert_eq!(confirmed.payment_id, "pay_1");
        // A confirmed order is final for the saga: no lease, no write.
        assert_eq!(
            store
                .try_lease("ord_1", "owner-3", 1_000_000, 2_000_000)
                .await
                .unwrap(),
            None
        );
        assert!(matches!(
            store
                .reject(&second, &order_of_the(&store, &second).await, "late", 50)
                .await,
            Err(StoreError::LeaseLost { .. })
        ));

        // Cancel: CONFIRMED → CANCELLING once, then leased and finished.
        assert!(store.request_cancel("ord_1", 60).await.unwrap());
        assert!(!store.request_cancel("ord_1", 61).await.unwrap());
        let cancelling = store.get("ord_1").await.unwrap();
        assert_eq!(
            (cancelling.status, cancelling.step),
            (OrderStatus::Cancelling, Step::Cancel)
        );
        assert_eq!(
            store.unfinished(70, 10).await.unwrap(),
            vec!["ord_1".to_owned()]
        );
        let third = store
            .try_lease("ord_1", "owner-3", 70, 5000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(third.version, 3);
        let cancelled = store
            .cancelled(&third, &order_of_the(&store, &third).await, 80)
            .await
            .unwrap();
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        assert!(store.unfinished(90, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn undo_keeps_the_reason_until_the_rejection() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (_, fence) = fence_of(insert(&store, "ord_1", "r1", "u_1", 10).await);
        store
            .undo(&fence, "payment declined: too much", 20, 1_020)
            .await
            .unwrap();
        let undoing = store.get("ord_1").await.unwrap();
        assert_eq!(
            (undoing.status, undoing.step),
            (OrderStatus::Pending, Step::Undo)
        );
        assert_eq!(undoing.rejection_reason, "payment declined: too much");
        let rejected = store
            .reject(
                &fence,
                &order_of_the(&store, &fence).await,
                "payment declined: too much",
                30,
            )
            .await
            .unwrap();
        assert_eq!(rejected.status, OrderStatus::Rejected);
        assert!(!store.request_cancel("ord_1", 40).await.unwrap());
    }

    #[tokio::test]
    async fn a_released_lease_can_be_taken_at_once_and_only_unfinished_orders_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (_, fence) = fence_of(insert(&store, "ord_1", "r1", "u_1", 10).await);
        // Held until 1010: not on the recovery list before that.
        assert!(store.unfinished(20, 10).await.unwrap().is_empty());
        let stranger = Fence {
            owner: "someone-else".into(),
            ..fence.clone()
        };
        store.release_lease(&stranger).await.unwrap();
        assert_eq!(
            store.try_lease("ord_1", "owner-2", 20, 5000).await.unwrap(),
            None
        );
        store.release_lease(&fence).await.unwrap();
        assert_eq!(
            store.unfinished(20, 10).await.unwrap(),
            vec!["ord_1".to_owned()]
        );
        assert!(store
            .try_lease("ord_1", "owner-2", 20, 5000)
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn list_pages_newest_first_with_keyset_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        // Five orders of u_1 (two in the same millisecond) and one of u_2.
        for (i, at) in [100, 200, 200, 300, 400].into_iter().enumerate() {
            insert(&store, &format!("ord_{i}"), &format!("r{i}"), "u_1", at).await;
        }
        insert(&store, "ord_x", "rx", "u_2", 250).await;

        let mut seen = Vec::new();
        let mut after: Option<PageKey> = None;
        loop {
            let page = store.list("u_1", after.as_ref(), 2).await.unwrap();
            if page.is_empty() {
                break;
            }
            let last = page.last().unwrap();
            after = Some(PageKey {
                created_at_unix_ms: last.created_at_unix_ms,
                order_id: last.order_id.clone(),
            });
            seen.extend(page.into_iter().map(|order| order.order_id));
        }
        assert_eq!(seen, ["ord_4", "ord_3", "ord_2", "ord_1", "ord_0"]);
        let other = store.list("u_2", None, 10).await.unwrap();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].lines.len(), 2);
        assert!(store.list("u_3", None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_inserts_of_one_request_on_two_pools_make_one_order() {
        let dir = tempfile::tempdir().unwrap();
        let stores = [open(dir.path()).await, open(dir.path()).await];
        let attempts = (0..8).map(|i| {
            let store = stores[i % 2].clone();
            async move { insert(&store, &format!("ord_{i}"), "same", "u_1", 10).await }
        });
        let results = futures::future::join_all(attempts).await;
        let new = results
            .iter()
            .filter(|result| matches!(result, Inserted::New(..)))
            .count();
        assert_eq!(new, 1, "{results:?}");
        let order = store_order(&stores[0]).await;
        assert_eq!(order.lines.len(), 2);
    }

    async fn store_order(store: &Store) -> Order {
        store.find_by_request("same").await.unwrap().unwrap()
    }

    /// Each step's write renews the lease in the same fenced statement (no
    /// separate renewal per step): after it, no other run can take the order
    /// until the new lease ends; a stale fence's step write changes nothing,
    /// the lease included.
    #[tokio::test]
    async fn a_step_write_renews_the_lease_and_a_stale_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        // Leased until 1010.
        let (_, fence) = fence_of(insert(&store, "ord_1", "r1", "u_1", 10).await);
        store.priced(&fence, &priced(500, 5_000)).await.unwrap();
        // At 2000 the first lease would be over: the step's write moved it.
        assert_eq!(
            store
                .try_lease("ord_1", "owner-2", 2_000, 9_000)
                .await
                .unwrap(),
            None
        );
        store.captured(&fence, "pay_1", 600, 6_000).await.unwrap();
        assert_eq!(
            store
                .try_lease("ord_1", "owner-2", 5_500, 9_000)
                .await
                .unwrap(),
            None
        );
        let second = store
            .try_lease("ord_1", "owner-2", 6_000, 9_000)
            .await
            .unwrap()
            .expect("the renewed lease has ended");
        assert_eq!((second.version, second.lease_until_unix_ms), (2, 9_000));

        // The first run's late step writes are fenced out and move nothing:
        // neither the step nor the lease (the second run keeps it).
        let before = store.get("ord_1").await.unwrap();
        assert!(matches!(
            store.undo(&fence, "late", 7_000, 99_000).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(matches!(
            store.next_attempt(&fence, 3, 7_000, 99_000).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(matches!(
            store.priced(&fence, &priced(7_000, 99_000)).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert_eq!(store.get("ord_1").await.unwrap(), before);
        assert_eq!(
            store
                .try_lease("ord_1", "owner-3", 9_001, 20_000)
                .await
                .unwrap()
                .map(|f| f.version),
            Some(3),
            "a stale write must not have extended the lease"
        );
    }

    /// The order `insert_pending` answers is the row it wrote (it is not
    /// read back, so the two must agree).
    #[tokio::test]
    async fn the_inserted_order_is_the_stored_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (order, _) = fence_of(insert(&store, "ord_1", "r1", "u_1", 10).await);
        assert_eq!(store.get("ord_1").await.unwrap(), order);
    }
}
