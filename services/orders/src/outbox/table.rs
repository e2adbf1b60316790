//! The outbox tables (`migrations/0005_outbox.sql`) as the relay reads and
//! writes them (an event is recorded by `crate::store::events::record`, in
//! its state change's transaction).

use mesh::storage::{NumberedArgs, Reader, Writer};
use sqlx::{AnyPool, Row};

pub use crate::store::Pending;
use crate::store::{
    events::{claimed_by_another, lease_in, LEASE},
    Columns, Store, StoreError,
};

mod on_thread;
mod unreadable;

#[cfg(test)]
impl Pending {
    /// `order_id`'s event number `sequence` (id `{order_id}-{sequence}`,
    /// empty body), for tests.
    pub(crate) fn for_test(order_id: &str, sequence: i64) -> Self {
        Self {
            event_id: format!("{order_id}-{sequence}"),
            order_id: order_id.into(),
            sequence,
            topic: super::TOPIC.into(),
            event_type: "mesh.events.v1.OrderConfirmed".into(),
            body: Vec::new(),
            traceparent: String::new(),
            tracestate: String::new(),
            created_at_unix_ms: sequence,
        }
    }
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

/// The relay's access to the outbox: its pending events read on the
/// store's readers (a SQLite file's reader threads, or the pool), writes as
/// units of the database's group-commit writer, so the relay's bookkeeping
/// shares the saga's durable commits instead of competing with them for the
/// database's one writer.
#[derive(Debug, Clone)]
pub struct Table {
    pool: AnyPool,
    writer: Writer,
    reader: Reader,
    unreadable: unreadable::Reported,
}

/// What publishing one leased order's events gave, for [`Table::finish`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The order.
    pub order_id: String,
    /// The events the broker confirmed, in the order published.
    pub confirmed: Vec<String>,
    /// The event whose publish failed, with why (nothing after it was tried).
    pub failed: Option<(String, String)>,
    /// The relay held the order by its first event's claim alone (the
    /// committing unit's hand-off; no `outbox_leases` row was written for
    /// it): there is no lease row to release.
    pub claim_only: bool,
}

impl Table {
    /// Over the store's database, writing through its writer.
    pub fn over(store: &Store) -> Self {
        Self {
            pool: store.pool().clone(),
            writer: store.writer().clone(),
            reader: store.reader().clone(),
            unreadable: unreadable::Reported::default(),
        }
    }

    /// Every pending event of up to `limit` orders, in one statement: the
    /// orders that waited longest first, each order's events in sequence;
    /// orders whose live lease another relay than `owner` holds at
    /// `now_unix_ms` (a lease row, or a claim in an event's row) are left
    /// out (they are that relay's to publish).
    pub async fn pending_batch(
        &self,
        limit: i64,
        owner: &str,
        now_unix_ms: i64,
    ) -> Result<Vec<Pending>, StoreError> {
        let args = NumberedArgs::new()
            .arg(owner.to_owned())
            .arg(now_unix_ms)
            .arg(limit);
        self.pending(PENDING_BATCH.to_owned(), args).await
    }

    /// Every pending event of `order_ids` (orders, each in sequence).
    pub async fn pending_of_orders(
        &self,
        order_ids: &[String],
    ) -> Result<Vec<Pending>, StoreError> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = NumberedArgs::new();
        for order_id in order_ids {
            args.push(order_id.clone());
        }
        self.pending(pending_of_orders_sql(order_ids.len()), args)
            .await
    }

    /// The pending events `sql` selects with `args`, read on a SQLite
    /// file's reader thread or on the pool, without the events of an order
    /// that has an unreadable row (`unreadable.rs`).
    async fn pending(&self, sql: String, args: NumberedArgs) -> Result<Vec<Pending>, StoreError> {
        let rows: Vec<_> = match &self.reader {
            Reader::Sqlite(reader) => {
                let rows = reader.read(move |connection| {
                    Ok::<_, StoreError>(args.rows(connection, &sql, |row| Ok(pending_from(row)))?)
                });
                rows.await?.into_iter().collect::<Result<_, _>>()?
            }
            Reader::Pool(pool) => {
                let rows = args.bind_to(sqlx::query(&sql)).fetch_all(pool).await?;
                rows.iter().map(pending_from).collect::<Result<_, _>>()?
            }
        };
        Ok(self.unreadable.readable(rows))
    }

    /// Takes `order_id`'s lease for `owner` until `until` unless another
    /// relay holds a live one (its own is renewed); whether it did.
    pub async fn lease(
        &self,
        order_id: &str,
        owner: &str,
        now_unix_ms: i64,
        until_unix_ms: i64,
    ) -> Result<bool, StoreError> {
        let (order_id, owner) = (order_id.to_owned(), owner.to_owned());
        match &self.writer {
            Writer::Sqlite(writer) => {
                writer
                    .write(move |connection| {
                        let taken = NumberedArgs::new()
                            .arg(order_id)
                            .arg(owner)
                            .arg(until_unix_ms)
                            .arg(now_unix_ms)
                            .rows(connection, LEASE, |_| Ok(()))?;
                        Ok(!taken.is_empty())
                    })
                    .await
            }
            Writer::Pool(writer) => {
                writer
                    .write(move |connection| {
                        Box::pin(async move {
                            Ok(
                                lease_in(connection, &order_id, &owner, now_unix_ms, until_unix_ms)
                                    .await?,
                            )
                        })
                    })
                    .await
            }
        }
    }

    /// Takes the leases of `order_ids` for `owner` until `until`, in one
    /// statement, except those another relay holds a live lease or claim
    /// on (its own are renewed); the orders it took.
    pub async fn lease_batch(
        &self,
        order_ids: &[String],
        owner: &str,
        now_unix_ms: i64,
        until_unix_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let (order_ids, owner) = (order_ids.to_vec(), owner.to_owned());
        let writer = match &self.writer {
            Writer::Sqlite(writer) => {
                return writer
                    .write(move |connection| {
                        let mut args = NumberedArgs::new()
                            .arg(owner)
                            .arg(until_unix_ms)
                            .arg(now_unix_ms);
                        for order_id in order_ids.iter().cloned() {
                            args.push(order_id);
                        }
                        Ok(
                            args.rows(connection, &lease_batch_sql(order_ids.len()), |row| {
                                row.get(0)
                            })?,
                        )
                    })
                    .await
            }
            Writer::Pool(writer) => writer,
        };
        writer
            .write(move |connection| {
                Box::pin(async move {
                    let sql = lease_batch_sql(order_ids.len());
                    let mut query = sqlx::query_scalar(&sql)
                        .bind(&owner)
                        .bind(until_unix_ms)
                        .bind(now_unix_ms);
                    for order_id in &order_ids {
                        query = query.bind(order_id);
                    }
                    Ok(query.fetch_all(&mut *connection).await?)
                })
            })
            .await
    }

    /// Records what publishing a batch of leased orders' events gave and
    /// gives `owner`'s leases on them up, in one write unit: exactly the
    /// confirmed events of each order leave the outbox (the broker holds
    /// them now), each failed event gets its attempt and error (kept,
    /// bounded, for people), and the leases are released (a no-op for an
    /// order another relay has by now), as are the claims of orders whose
    /// publish failed. Through the pool each of these is one statement for
    /// the whole batch; on SQLite's thread, fixed statements prepared once
    /// and run per event or per order.
    pub async fn finish(&self, owner: &str, outcomes: Vec<Outcome>) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let owner = owner.to_owned();
        let writer = match &self.writer {
            Writer::Sqlite(writer) => {
                return writer
                    .write(move |connection| on_thread::finish(connection, &owner, &outcomes))
                    .await
            }
            Writer::Pool(writer) => writer,
        };
        writer
            .write(move |connection| {
                Box::pin(async move {
                    remove_confirmed(connection, &outcomes).await?;
                    for outcome in &outcomes {
                        let Some((event_id, error)) = &outcome.failed else {
                            continue;
                        };
                        sqlx::query(FAILED_ATTEMPT)
                            .bind(bounded_error(error))
                            .bind(event_id)
                            .bind(&outcome.order_id)
                            .execute(&mut *connection)
                            .await?;
                    }
                    let leased = leased_orders(&outcomes);
                    if !leased.is_empty() {
                        let sql = release_sql(leased.len());
                        let mut release = sqlx::query(&sql).bind(&owner);
                        for order_id in leased {
                            release = release.bind(order_id);
                        }
                        release.execute(&mut *connection).await?;
                    }
                    // An order whose publish failed keeps pending rows: its
                    // claim (an order's first event) is given up like a
                    // lease, so any relay may take the order at once.
                    let failed = failed_orders(&outcomes);
                    if !failed.is_empty() {
                        let sql = unclaim_sql(failed.len());
                        let mut unclaim = sqlx::query(&sql).bind(&owner);
                        for order_id in failed {
                            unclaim = unclaim.bind(order_id);
                        }
                        unclaim.execute(&mut *connection).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// The order's pending events, in sequence.
    pub async fn pending_of(&self, order_id: &str) -> Result<Vec<Pending>, StoreError> {
        self.pending(
            PENDING_OF.to_owned(),
            NumberedArgs::new().arg(order_id.to_owned()),
        )
        .await
    }

    /// How many events are pending, and when the oldest was recorded.
    pub async fn backlog(&self) -> Result<(i64, Option<i64>), sqlx::Error> {
        let row = sqlx::query(BACKLOG).fetch_one(&self.pool).await?;
        Ok((row.try_get("pending")?, row.try_get("oldest")?))
    }

    /// Forgets rows an earlier version marked published before `before`
    /// (this one removes an event once the broker confirmed it) and leases
    /// that ended.
    pub async fn prune(&self, before_unix_ms: i64, now_unix_ms: i64) -> Result<u64, StoreError> {
        let writer = match &self.writer {
            Writer::Sqlite(writer) => {
                return writer
                    .write(move |connection| {
                        let pruned = NumberedArgs::new()
                            .arg(before_unix_ms)
                            .execute(connection, PRUNE_PUBLISHED)?;
                        NumberedArgs::new()
                            .arg(now_unix_ms)
                            .execute(connection, PRUNE_LEASES)?;
                        Ok(pruned as u64)
                    })
                    .await
            }
            Writer::Pool(writer) => writer,
        };
        writer
            .write(move |connection| {
                Box::pin(async move {
                    let pruned = sqlx::query(PRUNE_PUBLISHED)
                        .bind(before_unix_ms)
                        .execute(&mut *connection)
                        .await?
                        .rows_affected();
                    sqlx::query(PRUNE_LEASES)
                        .bind(now_unix_ms)
                        .execute(&mut *connection)
                        .await?;
                    Ok(pruned)
                })
            })
            .await
    }
}

/// A failed publish's error as kept in the row: bounded (it may hold
/// anything the broker said).
fn bounded_error(error: &str) -> String {
    error.chars().take(300).collect()
}

/// The orders of `outcomes` held by a lease row (not by a claim alone).
fn leased_orders(outcomes: &[Outcome]) -> Vec<&str> {
    outcomes
        .iter()
        .filter(|outcome| !outcome.claim_only)
        .map(|outcome| outcome.order_id.as_str())
        .collect()
}

/// The orders of `outcomes` whose publish failed.
fn failed_orders(outcomes: &[Outcome]) -> Vec<&str> {
    outcomes
        .iter()
        .filter(|outcome| outcome.failed.is_some())
        .map(|outcome| outcome.order_id.as_str())
        .collect()
}

/// Removes the confirmed events of every outcome from the outbox, in one
/// statement; each event only as its own order's (an id named under the
/// wrong order is not touched).
async fn remove_confirmed(
    connection: &mut sqlx::AnyConnection,
    outcomes: &[Outcome],
) -> Result<(), sqlx::Error> {
    let confirmed: Vec<usize> = outcomes
        .iter()
        .map(|outcome| outcome.confirmed.len())
        .filter(|confirmed| *confirmed > 0)
        .collect();
    if confirmed.is_empty() {
        return Ok(());
    }
    let sql = remove_confirmed_sql(&confirmed);
    let mut query = sqlx::query(&sql);
    for outcome in outcomes
        .iter()
        .filter(|outcome| !outcome.confirmed.is_empty())
    {
        query = query.bind(&outcome.order_id);
        for event_id in &outcome.confirmed {
            query = query.bind(event_id);
        }
    }
    query.execute(&mut *connection).await?;
    Ok(())
}

// The statements on the outbox, named so that a test can check how SQLite
// runs each: every one finds its rows through an index (a backlog can grow
// large while the broker is down, and an earlier version kept a day of
// published rows that the prune still removes).

/// [`Table::pending_batch`]: $1 owner, $2 now, $3 limit.
const PENDING_BATCH: &str = "\
    SELECT o.event_id, o.order_id, o.sequence, o.topic, o.event_type, o.payload_hex, o.traceparent, o.tracestate, o.created_at_unix_ms \
    FROM outbox o JOIN ( \
      SELECT order_id, MIN(created_at_unix_ms) AS first_unix_ms FROM outbox \
      WHERE published_at_unix_ms = 0 AND order_id NOT IN \
        (SELECT order_id FROM outbox_leases WHERE owner <> $1 AND until_unix_ms > $2) \
      GROUP BY order_id \
      HAVING MAX(CASE WHEN claimed_by <> $1 AND claimed_until_unix_ms > $2 THEN 1 ELSE 0 END) = 0 \
      ORDER BY MIN(created_at_unix_ms), order_id LIMIT $3 \
    ) waiting ON o.order_id = waiting.order_id \
    WHERE o.published_at_unix_ms = 0 \
    ORDER BY waiting.first_unix_ms, o.order_id, o.sequence";

/// [`Table::pending_of`]: $1 the order.
const PENDING_OF: &str = "\
    SELECT event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms \
    FROM outbox WHERE order_id = $1 AND published_at_unix_ms = 0 ORDER BY sequence";

/// [`Table::backlog`].
const BACKLOG: &str = "SELECT COUNT(*) AS pending, MIN(created_at_unix_ms) AS oldest FROM outbox WHERE published_at_unix_ms = 0";

/// A failed publish's attempt: $1 error, $2 event, $3 its order.
const FAILED_ATTEMPT: &str = "UPDATE outbox SET attempts = attempts + 1, last_error = $1 \
     WHERE published_at_unix_ms = 0 AND order_id = $3 AND event_id = $2";

/// [`Table::prune`]'s rows: $1 published before.
const PRUNE_PUBLISHED: &str =
    "DELETE FROM outbox WHERE published_at_unix_ms > 0 AND published_at_unix_ms < $1";

/// [`Table::prune`]'s leases: $1 ended before.
const PRUNE_LEASES: &str = "DELETE FROM outbox_leases WHERE until_unix_ms < $1";

/// [`Table::pending_of_orders`] for `orders` orders ($1…).
fn pending_of_orders_sql(orders: usize) -> String {
    format!(
        "SELECT event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms \
         FROM outbox WHERE published_at_unix_ms = 0 AND order_id IN ({}) ORDER BY order_id, sequence",
        placeholders(1, orders)
    )
}

/// [`Table::lease_batch`] for `orders` orders: $1 owner, $2 until, $3 now,
/// the orders from $4.
fn lease_batch_sql(orders: usize) -> String {
    let rows: Vec<String> = (0..orders).map(|at| format!("(${})", at + 4)).collect();
    format!(
        "INSERT INTO outbox_leases (order_id, owner, until_unix_ms) \
         SELECT v.column1, $1, $2 FROM (VALUES {}) AS v WHERE NOT {} \
         ON CONFLICT (order_id) DO UPDATE SET owner = excluded.owner, until_unix_ms = excluded.until_unix_ms \
         WHERE outbox_leases.until_unix_ms <= $3 OR outbox_leases.owner = excluded.owner RETURNING order_id",
        rows.join(", "),
        claimed_by_another!("v.column1", "$1", "$3")
    )
}

/// The release of `orders` leases: $1 owner, the orders from $2.
fn release_sql(orders: usize) -> String {
    format!(
        "DELETE FROM outbox_leases WHERE owner = $1 AND order_id IN ({})",
        placeholders(2, orders)
    )
}

/// The claims given up on `orders` orders: $1 owner, the orders from $2.
fn unclaim_sql(orders: usize) -> String {
    format!(
        "UPDATE outbox SET claimed_until_unix_ms = 0 \
         WHERE claimed_by = $1 AND published_at_unix_ms = 0 AND order_id IN ({})",
        placeholders(2, orders)
    )
}

/// The removal of the confirmed events of orders, `confirmed[i]` of the
/// i-th: each order followed by its events, from $1. A published event
/// leaves the outbox at once (ADR 0020, "The outbox holds pending events
/// only"): the broker's stream or queue is its record from then on, and a
/// `DELETE` costs the commit less than rewriting the row as published did.
/// The orders' list up front lets the database find the rows through the
/// index of pending rows by order; the terms then keep each id to its own
/// order.
fn remove_confirmed_sql(confirmed: &[usize]) -> String {
    let mut next = 1;
    let mut orders = Vec::with_capacity(confirmed.len());
    let mut terms = Vec::with_capacity(confirmed.len());
    for &events in confirmed {
        orders.push(format!("${next}"));
        terms.push(format!(
            "(order_id = ${next} AND event_id IN ({}))",
            placeholders(next + 1, events)
        ));
        next += 1 + events;
    }
    format!(
        "DELETE FROM outbox WHERE published_at_unix_ms = 0 AND order_id IN ({}) AND ({})",
        orders.join(", "),
        terms.join(" OR ")
    )
}

/// The removal of one confirmed event on SQLite's writer thread: $1 its
/// order, $2 the event (an id named under the wrong order is not touched).
/// One text, prepared once per connection: [`remove_confirmed_sql`] has a
/// text for every batch shape, and parsing it at every round was 0.6 % of
/// orders' CPU under load (a `perf` profile, 2026-12-07).
const REMOVE_ONE: &str =
    "DELETE FROM outbox WHERE published_at_unix_ms = 0 AND order_id = $1 AND event_id = $2";

/// `$first, $first+1, …` (`count` of them).
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|at| format!("${at}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The outbox rows as the relay publishes them.
/// A pending event from a row of the pending queries (on a reader thread
/// or the pool).
/// A column of the wrong type is an error of the whole read; a body that is
/// not hex is the row's alone ([`unreadable::Unreadable`]).
fn pending_from(row: &impl Columns) -> Result<Result<Pending, unreadable::Unreadable>, StoreError> {
    let event_id = row.text("event_id")?;
    let order_id = row.text("order_id")?;
    let Some(body) = events::text_body::decode(&row.text("payload_hex")?) else {
        return Ok(Err(unreadable::Unreadable { order_id, event_id }));
    };
    Ok(Ok(Pending {
        event_id,
        order_id,
        sequence: row.int("sequence")?,
        topic: row.text("topic")?,
        event_type: row.text("event_type")?,
        body,
        traceparent: row.text("traceparent")?,
        tracestate: row.text("tracestate")?,
        created_at_unix_ms: row.int("created_at_unix_ms")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{Item, OrderStatus, ParkReason},
        outbox::Wake,
        store::{order_of_the, Fence, Inserted, NewOrder, Store, StoreError},
    };
    use mesh::proto::events::v1::OrderConfirmed;

    /// The relay of the store `open` gives, and its lease.
    const RELAY: &str = "relay-a";
    const LEASE_MS: i64 = 1000;

    async fn open_with_wake(dir: &std::path::Path) -> (Store, Table, Wake) {
        let pool = mesh::storage::open("orders", None, dir, &crate::MIGRATOR)
            .await
            .expect("open the orders database");
        let wake = Wake::new(RELAY, std::time::Duration::from_millis(LEASE_MS as u64));
        let store = Store::with_outbox(pool, wake.clone()).expect("start the orders writer");
        let table = Table::over(&store);
        (store, table, wake)
    }

    async fn open(dir: &std::path::Path) -> (Store, Table) {
        let (store, table, _) = open_with_wake(dir).await;
        (store, table)
    }

    async fn pending_order(store: &Store, order_id: &str, at: i64) -> Fence {
        let items = [Item {
            sku: "apple".into(),
            quantity: 1,
        }];
        let inserted = store
            .insert_pending(
                &NewOrder {
                    order_id,
                    request_id: order_id,
                    user_id: "u_1",
                    currency: "EUR",
                    items: &items,
                    now_unix_ms: at,
                },
                "owner-1",
                at + 1000,
            )
            .await
            .unwrap();
        match inserted {
            Inserted::New(_, fence) => fence,
            Inserted::Existing(order) => panic!("expected a new order, got {order:?}"),
        }
    }

    /// Every statement on the outbox finds its rows through an index, none
    /// scans the table or a whole index of it: a scan would grow with the
    /// backlog, or with the published rows an earlier version kept. (An index of the
    /// pending rows alone, migration 0007, serves a lookup by order only
    /// where the statement asks for pending rows.) The two statements that
    /// want every pending row, the relay's read (it picks the orders that
    /// waited longest) and the backlog's count, read them through that
    /// index, never the published rows (migration 0008 keeps no other index
    /// of pending rows).
    #[tokio::test]
    async fn every_statement_on_the_outbox_finds_its_rows_through_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path()).await;
        let statements = [
            ("the relay's read", PENDING_BATCH.to_owned(), true),
            ("an order's pending events", PENDING_OF.to_owned(), false),
            (
                "leased orders' pending events",
                pending_of_orders_sql(3),
                false,
            ),
            ("the relay's leases", lease_batch_sql(3), false),
            (
                "a unit's lease",
                crate::store::events::LEASE.to_owned(),
                false,
            ),
            ("a failed publish", FAILED_ATTEMPT.to_owned(), false),
            ("claims given up", unclaim_sql(3), false),
            (
                "the removal of published events",
                remove_confirmed_sql(&[2, 1]),
                false,
            ),
            (
                "the removal of one published event",
                REMOVE_ONE.to_owned(),
                false,
            ),
            ("the backlog", BACKLOG.to_owned(), true),
            ("the prune", PRUNE_PUBLISHED.to_owned(), false),
        ];
        for (name, sql, every_pending_row) in statements {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut query = sqlx::query(&explain);
            for _ in 0..highest_placeholder(&sql) {
                query = query.bind("x");
            }
            let plan: Vec<String> = query
                .fetch_all(store.pool())
                .await
                .unwrap_or_else(|error| panic!("{name}: {error}"))
                .iter()
                .map(|row| row.try_get("detail").unwrap())
                .collect();
            assert!(
                !plan.iter().any(|step| scans_outbox(step)
                    && !(every_pending_row && reads_pending_rows_only(step))),
                "{name} scans the outbox: {plan:#?}"
            );
        }
    }

    /// A database made before migration 0007 (its (order, sequence) index
    /// over every row), with published and pending events in it, upgrades:
    /// the index holds the pending rows only, and the relay's reads and
    /// removals work on the rows from before.
    #[tokio::test]
    async fn events_recorded_before_migration_0007_are_published_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let before = tempfile::tempdir().unwrap();
        let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for entry in std::fs::read_dir(&migrations).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < "0007" {
                std::fs::copy(&path, before.path().join(&name)).unwrap();
            }
        }
        {
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(dir.path().join("orders.db"))
                        .create_if_missing(true),
                )
                .await
                .unwrap();
            sqlx::migrate::Migrator::new(before.path())
                .await
                .unwrap()
                .run(&pool)
                .await
                .unwrap();
            let body = events::text_body::encode(b"old");
            for (event_id, order_id, sequence, published) in [
                ("e-1", "ord_old", 1, 5),
                ("e-2", "ord_old", 2, 0),
                ("e-3", "ord_other", 1, 0),
            ] {
                sqlx::query(
                    "INSERT INTO outbox (event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms, published_at_unix_ms, attempts, last_error) \
                     VALUES (?, ?, ?, 'orders', 'mesh.events.v1.OrderCancelled', ?, '', '', ?, ?, 0, '')",
                )
                .bind(event_id)
                .bind(order_id)
                .bind(sequence)
                .bind(&body)
                .bind(sequence)
                .bind(published)
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }

        let (store, table) = open(dir.path()).await;
        let index: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'outbox_pending_order'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert!(index.contains("WHERE published_at_unix_ms = 0"), "{index}");
        let old_index: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'outbox_order_sequence'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(old_index, 0, "the index over every row is gone");

        let pending = table.pending_of("ord_old").await.unwrap();
        assert_eq!(
            pending
                .iter()
                .map(|event| event.sequence)
                .collect::<Vec<_>>(),
            [2],
            "only the pending event of the order"
        );
        assert_eq!(pending[0].body, b"old");
        let batch = table.pending_batch(64, RELAY, 100).await.unwrap();
        assert_eq!(
            batch
                .iter()
                .map(|event| event.event_id.as_str())
                .collect::<Vec<_>>(),
            ["e-3", "e-2"],
            "the order that waited longest first"
        );
        assert_eq!(
            table
                .lease_batch(&["ord_old".to_owned()], RELAY, 100, 200)
                .await
                .unwrap(),
            ["ord_old"]
        );
        table
            .finish(
                RELAY,
                vec![Outcome {
                    order_id: "ord_old".into(),
                    confirmed: vec!["e-2".into()],
                    ..Outcome::default()
                }],
            )
            .await
            .unwrap();
        assert!(table.pending_of("ord_old").await.unwrap().is_empty());
        assert_eq!(table.backlog().await.unwrap(), (1, Some(1)));
        // The row published before the upgrade (at 5) goes with the prune,
        // found through migration 0008's index of published rows.
        assert_eq!(table.prune(4, 300).await.unwrap(), 0);
        assert_eq!(table.prune(6, 300).await.unwrap(), 1);
        assert_eq!(table.backlog().await.unwrap(), (1, Some(1)));
    }

    /// A pending row is in two b-trees of the outbox, the rows and the
    /// index of pending rows by order (migration 0008): each is a page the
    /// recording commit and the removal write to the WAL. The index of
    /// published rows holds none of them.
    #[tokio::test]
    async fn a_pending_event_is_in_two_btrees() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox' ORDER BY name",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let names: Vec<&str> = indexes.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["outbox_pending_order", "outbox_published"]);
        assert!(
            indexes[0].1.ends_with("WHERE published_at_unix_ms = 0"),
            "{indexes:?}"
        );
        assert!(
            indexes[1].1.ends_with("WHERE published_at_unix_ms > 0"),
            "{indexes:?}"
        );

        let fence = pending_order(&store, "ord_1", 10).await;
        confirm_as_stored(&store, &fence, 20).await;
        let in_published: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox INDEXED BY outbox_published WHERE published_at_unix_ms > 0",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(in_published, 0);
        assert_eq!(table.backlog().await.unwrap(), (1, Some(20)));
    }

    /// The highest `$n` in `sql`.
    fn highest_placeholder(sql: &str) -> usize {
        sql.split('$')
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    /// A query plan's step that reads the whole outbox table or one of its
    /// indexes ("SCAN outbox", "SCAN o USING INDEX …"; the statements name
    /// it `outbox`, `o` or `c`).
    fn scans_outbox(step: &str) -> bool {
        let mut words = step.split_whitespace();
        words.next() == Some("SCAN") && matches!(words.next(), Some("outbox" | "o" | "c"))
    }

    /// A plan step that reads the index of pending rows (migration 0007's
    /// partial index) from end to end: every pending row, no published one.
    fn reads_pending_rows_only(step: &str) -> bool {
        step.ends_with("USING INDEX outbox_pending_order")
            || step.ends_with("USING COVERING INDEX outbox_pending_order")
    }

    #[test]
    fn a_plan_step_that_reads_the_whole_outbox_is_told_from_one_that_searches_it() {
        assert!(scans_outbox("SCAN outbox"));
        assert!(scans_outbox("SCAN o USING INDEX outbox_published"));
        assert!(!scans_outbox(
            "SEARCH o USING INDEX outbox_pending_order (order_id=?)"
        ));
        assert!(!scans_outbox("SCAN outbox_leases"));
        assert!(reads_pending_rows_only(
            "SCAN outbox USING INDEX outbox_pending_order"
        ));
        assert!(!reads_pending_rows_only(
            "SCAN outbox USING INDEX outbox_published"
        ));
        assert!(!scans_outbox("SCAN waiting"));
        assert_eq!(highest_placeholder("a = $1 AND b IN ($12, $3)"), 12);
    }

    #[tokio::test]
    async fn a_final_state_and_its_event_commit_together_in_the_orders_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let fence = pending_order(&store, "ord_1", 10).await;
        assert!(table.pending_of("ord_1").await.unwrap().is_empty());

        confirm_as_stored(&store, &fence, 20).await;
        let (event, body) = only_confirmed(&table, "ord_1").await;
        assert_eq!(event.sequence, 1);
        assert_eq!(event.event_type, "mesh.events.v1.OrderConfirmed");
        assert_eq!(event.topic, crate::outbox::TOPIC);
        assert_eq!(event.created_at_unix_ms, 20);
        assert_eq!(body.order_id, "ord_1");
        assert_eq!(body.sequence, 1);

        // The cancel that follows is the order's second event.
        cancel_as_stored(&store, "ord_1", 30).await;
        let events = table.pending_of("ord_1").await.unwrap();
        let sequences: Vec<(i64, &str)> = events
            .iter()
            .map(|event| (event.sequence, event.event_type.as_str()))
            .collect();
        assert_eq!(
            sequences,
            [
                (1, "mesh.events.v1.OrderConfirmed"),
                (2, "mesh.events.v1.OrderCancelled")
            ]
        );
        assert_eq!(table.backlog().await.unwrap(), (2, Some(20)));
    }

    #[tokio::test]
    async fn a_state_change_that_is_refused_records_no_event() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let first = pending_order(&store, "ord_1", 10).await;
        // Its lease expires and another run takes the order over: the first
        // run's confirmation is refused, and with it the event.
        let second = store
            .try_lease("ord_1", "owner-2", 2000, 9000)
            .await
            .unwrap()
            .expect("an expired lease is taken");
        assert!(matches!(
            store
                .confirm(&first, &order_of_the(&store, &first).await, 2100)
                .await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(table.pending_of("ord_1").await.unwrap().is_empty());
        assert_eq!(table.backlog().await.unwrap(), (0, None));
        store
            .reject(
                &second,
                &order_of_the(&store, &second).await,
                "out of stock",
                2200,
            )
            .await
            .unwrap();
        let events = table.pending_of("ord_1").await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "mesh.events.v1.OrderRejected");
        assert_eq!(events[0].sequence, 1);
    }

    /// The event types of `order_id`'s pending events, in sequence.
    async fn event_types(table: &Table, order_id: &str) -> Vec<(i64, String)> {
        table
            .pending_of(order_id)
            .await
            .unwrap()
            .into_iter()
            .map(|event| (event.sequence, event.event_type))
            .collect()
    }

    #[tokio::test]
    async fn an_operators_resolution_records_the_event_its_final_state_causes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let park = |fence: Fence, at: i64| {
            let store = store.clone();
            async move {
                assert!(store
                    .park(&fence, ParkReason::PaymentState, "held for a person", at)
                    .await
                    .unwrap());
            }
        };

        // PENDING, parked, resolved CONFIRMED: shipping must hear of it.
        let fence = pending_order(&store, "ord_1", 10).await;
        park(fence, 20).await;
        store
            .resolve("ord_1", OrderStatus::Confirmed, "", 30)
            .await
            .unwrap();
        assert_eq!(
            event_types(&table, "ord_1").await,
            [(1, "mesh.events.v1.OrderConfirmed".to_owned())]
        );

        // Cancelled later, parked while CANCELLING, resolved back to
        // CONFIRMED: nothing changed for a consumer, no event.
        assert!(store.request_cancel("ord_1", 40).await.unwrap());
        let cancelling = store.try_lease("ord_1", "owner-2", 50, 5000).await.unwrap();
        park(cancelling.expect("a cancelling order is leased"), 60).await;
        store
            .resolve("ord_1", OrderStatus::Confirmed, "", 70)
            .await
            .unwrap();
        assert_eq!(event_types(&table, "ord_1").await.len(), 1);

        // Parked while CANCELLING again, resolved CANCELLED: the shipment
        // must be cancelled, so the event follows the confirmation.
        assert!(store.request_cancel("ord_1", 80).await.unwrap());
        let cancelling = store.try_lease("ord_1", "owner-3", 90, 5000).await.unwrap();
        park(cancelling.expect("a cancelling order is leased"), 100).await;
        store
            .resolve("ord_1", OrderStatus::Cancelled, "", 110)
            .await
            .unwrap();
        assert_eq!(
            event_types(&table, "ord_1").await,
            [
                (1, "mesh.events.v1.OrderConfirmed".to_owned()),
                (2, "mesh.events.v1.OrderCancelled".to_owned())
            ]
        );

        // PENDING, parked, resolved REJECTED; a second resolution of the
        // same order is refused and records nothing.
        let fence = pending_order(&store, "ord_2", 120).await;
        park(fence, 130).await;
        store
            .resolve("ord_2", OrderStatus::Rejected, "refused by hand", 140)
            .await
            .unwrap();
        assert!(matches!(
            store
                .resolve("ord_2", OrderStatus::Rejected, "again", 150)
                .await,
            Err(StoreError::NotParked { .. })
        ));
        assert_eq!(
            event_types(&table, "ord_2").await,
            [(1, "mesh.events.v1.OrderRejected".to_owned())]
        );
    }

    #[tokio::test]
    async fn one_relay_at_a_time_holds_an_orders_lease() {
        let dir = tempfile::tempdir().unwrap();
        let (_, table) = open(dir.path()).await;
        assert!(table.lease("ord_1", "relay-a", 100, 1100).await.unwrap());
        assert!(
            !table.lease("ord_1", "relay-b", 500, 1500).await.unwrap(),
            "a live lease is not taken"
        );
        assert!(
            table.lease("ord_2", "relay-b", 500, 1500).await.unwrap(),
            "other orders are free"
        );
        assert!(
            table.lease("ord_1", "relay-a", 600, 1600).await.unwrap(),
            "a relay renews its own lease"
        );
        // Expired: another relay takes it, and the first one's release no
        // longer removes it.
        assert!(table.lease("ord_1", "relay-b", 1600, 2600).await.unwrap());
        let release = |owner: &'static str| table.finish(owner, vec![nothing_of("ord_1")]);
        release("relay-a").await.unwrap();
        assert!(!table.lease("ord_1", "relay-a", 1700, 2700).await.unwrap());
        release("relay-b").await.unwrap();
        assert!(table.lease("ord_1", "relay-a", 1700, 2700).await.unwrap());
    }

    #[tokio::test]
    async fn published_events_leave_the_outbox_and_rows_an_earlier_version_marked_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let first = pending_order(&store, "ord_1", 10).await;
        store
            .confirm(&first, &order_of_the(&store, &first).await, 20)
            .await
            .unwrap();
        let second = pending_order(&store, "ord_2", 30).await;
        store
            .confirm(&second, &order_of_the(&store, &second).await, 40)
            .await
            .unwrap();
        assert_eq!(
            batch_orders(&table, 10).await,
            ["ord_1", "ord_2"],
            "the longest waiting first"
        );
        let event = table.pending_of("ord_1").await.unwrap().remove(0);
        let failed = Outcome {
            order_id: "ord_1".into(),
            confirmed: vec![],
            failed: Some((event.event_id.clone(), "x".repeat(10_000))),
            claim_only: false,
        };
        table.finish(RELAY, vec![failed]).await.unwrap();
        let error: String = sqlx::query_scalar("SELECT last_error FROM outbox WHERE event_id = $1")
            .bind(&event.event_id)
            .fetch_one(&table.pool)
            .await
            .unwrap();
        assert_eq!(error.len(), 300, "a failure's text is bounded");
        let confirmed = Outcome {
            order_id: "ord_1".into(),
            confirmed: vec![event.event_id.clone()],
            failed: None,
            claim_only: false,
        };
        table.finish(RELAY, vec![confirmed]).await.unwrap();
        assert_eq!(batch_orders(&table, 10).await, ["ord_2"]);
        assert_eq!(table.backlog().await.unwrap(), (1, Some(40)));
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE event_id = $1")
            .bind(&event.event_id)
            .fetch_one(&table.pool)
            .await
            .unwrap();
        assert_eq!(left, 0, "a published event leaves the outbox");
        // A row an earlier version marked published at 100 (it kept them).
        sqlx::query(
            "INSERT INTO outbox (event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms, published_at_unix_ms, attempts, last_error) \
             VALUES ('e-old', 'ord_old', 1, 'orders', 'mesh.events.v1.OrderConfirmed', '', '', '', 90, 100, 1, '')",
        )
        .execute(&table.pool)
        .await
        .unwrap();
        assert_eq!(table.backlog().await.unwrap(), (1, Some(40)), "not pending");
        assert_eq!(table.prune(100, 100).await.unwrap(), 0, "not yet");
        assert_eq!(table.prune(101, 101).await.unwrap(), 1);
        assert_eq!(
            table.prune(10_000, 10_000).await.unwrap(),
            0,
            "pending stays"
        );
        assert_eq!(table.pending_of("ord_2").await.unwrap().len(), 1);
    }

    /// An outcome that published nothing (a release).
    fn nothing_of(order_id: &str) -> Outcome {
        Outcome {
            order_id: order_id.into(),
            ..Outcome::default()
        }
    }

    /// The orders of the batch `RELAY` reads at time 0, in the order read.
    async fn batch_orders(table: &Table, limit: i64) -> Vec<String> {
        let mut orders: Vec<String> = Vec::new();
        for row in table.pending_batch(limit, RELAY, 0).await.unwrap() {
            if orders.last() != Some(&row.order_id) {
                orders.push(row.order_id);
            }
        }
        orders
    }

    /// Whom `order_id`'s first event is claimed for, until when.
    async fn claim_of(table: &Table, order_id: &str) -> (String, i64) {
        sqlx::query_as(
            "SELECT claimed_by, claimed_until_unix_ms FROM outbox WHERE order_id = $1 AND sequence = 1",
        )
        .bind(order_id)
        .fetch_one(&table.pool)
        .await
        .unwrap()
    }

    /// Who holds `order_id`'s lease, until when.
    async fn lease_of(table: &Table, order_id: &str) -> Option<(String, i64)> {
        sqlx::query_as("SELECT owner, until_unix_ms FROM outbox_leases WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&table.pool)
            .await
            .unwrap()
    }

    /// What a committing unit hands its relay is the event its row holds,
    /// every field of it: the relay publishes it from memory with no read.
    /// An order's second event, handed before the relay took the first,
    /// comes with it in sequence; once the first was taken, the second is
    /// left to a read of the outbox, which knows whether the first is still
    /// pending.
    #[tokio::test]
    async fn the_events_handed_over_in_memory_are_the_ones_in_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table, wake) = open_with_wake(dir.path()).await;
        let fence = pending_order(&store, "ord_1", 10).await;
        confirm_as_stored(&store, &fence, 20).await;
        cancel_as_stored(&store, "ord_1", 30).await;
        assert!(!wake.take_read_needed(), "both were handed over whole");
        let ready = wake.take_ready(64, 60);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0, "ord_1");
        assert_eq!(ready[0].1, table.pending_of("ord_1").await.unwrap());
        assert_eq!(wake.take_handed("ord_1"), None, "taken once");

        // A second order's first event is taken alone; its second comes
        // after, without it.
        let fence = pending_order(&store, "ord_2", 100).await;
        confirm_as_stored(&store, &fence, 110).await;
        let first = wake.take_ready(64, 120);
        assert_eq!(first[0].1, table.pending_of("ord_2").await.unwrap());
        cancel_as_stored(&store, "ord_2", 130).await;
        assert!(wake.take_read_needed(), "the relay reads the outbox for it");
        assert!(wake.take_ready(64, 160).is_empty());
        assert_eq!(wake.take_handed("ord_2"), Some(150 + LEASE_MS));
    }

    /// A relay kept busy by a steady stream of hand-offs still reads the
    /// outbox when asked: an event nothing handed over (here a row with no
    /// claim, as another instance's or a recovered one would be) is
    /// published while orders keep being confirmed. Real Redis; the sweep
    /// is an hour away, so only the commit's request for a read can find
    /// the row, and the gather (50 ms an event) makes every memory round
    /// find more hand-offs waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steady_stream_of_hand_offs_does_not_keep_the_relay_from_reading() {
        let redis = testkit::RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let (store, table, wake) = open_with_wake(dir.path()).await;
        let settings = events::BrokerSettings::new(events::BrokerUrl::parse(&redis.url()).unwrap());
        let relay = crate::outbox::Relay::new(
            table.clone(),
            wake.clone(),
            crate::outbox::RelayOptions {
                sweep_every: std::time::Duration::from_secs(3600),
                gather_per_event: std::time::Duration::from_millis(50),
                gather: std::time::Duration::from_millis(200),
                ..crate::outbox::RelayOptions::default()
            },
        );
        let running = tokio::spawn(relay.run(move || {
            let settings = settings.clone();
            async move { events::connect(&settings) }
        }));
        // The relay's first sweep (at once) has found nothing.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;

        let stream = {
            let store = store.clone();
            tokio::spawn(async move {
                for at in 0.. {
                    let now = mesh::storage::now_unix_ms();
                    let fence = pending_order(&store, &format!("ord_stream_{at}"), now).await;
                    confirm_as_stored(&store, &fence, now).await;
                }
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = mesh::storage::now_unix_ms();
        sqlx::query(
            "INSERT INTO outbox (event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms, published_at_unix_ms, attempts, last_error) \
             VALUES ('e-left', 'ord_left', 1, 'orders', 'mesh.events.v1.OrderConfirmed', '', '', '', $1, 0, 0, '')",
        )
        .bind(now)
        .execute(store.pool())
        .await
        .unwrap();
        wake.notify_read();

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut published = false;
        while std::time::Instant::now() < deadline {
            if table.pending_of("ord_left").await.unwrap().is_empty() {
                published = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let streaming = !stream.is_finished();
        stream.abort();
        running.abort();
        assert!(published, "the row nothing handed over is still pending");
        assert!(streaming, "the hand-offs kept coming meanwhile");
        let stream_length = redis.cli(&["XLEN", "mesh.events.orders"]);
        assert!(
            stream_length.trim().parse::<u64>().unwrap() > 1,
            "handed events were published too: {stream_length}"
        );
    }

    #[tokio::test]
    async fn a_committed_event_is_leased_to_its_instances_relay_until_the_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table, wake) = open_with_wake(dir.path()).await;
        committed_hand_off(&store, &table, &wake).await;
    }

    /// The unit that records an event leases the order to its relay (in
    /// the same statement as the row: SQLite's two-statement query,
    /// PostgreSQL's CTE), unless another relay holds it.
    async fn committed_hand_off(store: &Store, table: &Table, wake: &Wake) {
        let fence = pending_order(store, "ord_1", 10).await;
        store
            .confirm(&fence, &order_of_the(store, &fence).await, 20)
            .await
            .unwrap();
        assert_eq!(
            claim_of(table, "ord_1").await,
            (RELAY.to_owned(), 20 + LEASE_MS),
            "the confirming unit leased the order's first event to its relay in the row"
        );
        assert_eq!(lease_of(table, "ord_1").await, None, "with no lease row");
        assert_eq!(wake.take_handed("ord_1"), Some(20 + LEASE_MS));
        assert_eq!(wake.take_handed("ord_1"), None, "handed over once");
        assert!(
            !table.lease("ord_1", "relay-b", 500, 1500).await.unwrap(),
            "another relay does not take a pre-leased order while the lease lasts"
        );
        let read_by = |relay: &'static str| async move {
            table
                .pending_batch(64, relay, 500)
                .await
                .unwrap()
                .into_iter()
                .map(|row| row.order_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            read_by("relay-b").await,
            Vec::<String>::new(),
            "nor reads it"
        );
        assert_eq!(read_by(RELAY).await, ["ord_1"]);
        // A failed publish gives the claim up like a lease.
        let event_id = table.pending_of("ord_1").await.unwrap()[0].event_id.clone();
        let failed = Outcome {
            order_id: "ord_1".into(),
            confirmed: Vec::new(),
            failed: Some((event_id, "the broker refused it".into())),
            claim_only: false,
        };
        table.finish(RELAY, vec![failed]).await.unwrap();
        assert!(
            table.lease("ord_1", "relay-b", 700, 3000).await.unwrap(),
            "once its relay gave it up, another takes it"
        );

        // A claim whose relay died ends with the lease's time.
        let fence = pending_order(store, "ord_3", 10).await;
        store
            .confirm(&fence, &order_of_the(store, &fence).await, 20)
            .await
            .unwrap();
        assert!(!table
            .lease("ord_3", "relay-b", 20 + LEASE_MS - 1, 3000)
            .await
            .unwrap());
        assert!(
            table
                .lease("ord_3", "relay-b", 20 + LEASE_MS, 3000)
                .await
                .unwrap(),
            "it does once the lease ended (the committing relay died)"
        );

        // The cancel is committed while relay-b holds the order: the unit
        // does not take it from relay-b, and hands nothing over.
        assert!(store.request_cancel("ord_1", 1100).await.unwrap());
        let cancelling = store
            .try_lease("ord_1", "saga-2", 1200, 5000)
            .await
            .unwrap()
            .expect("a cancelling order is leased");
        store
            .cancelled(&cancelling, &order_of_the(store, &cancelling).await, 1300)
            .await
            .unwrap();
        assert_eq!(event_types(table, "ord_1").await.len(), 2);
        assert_eq!(
            lease_of(table, "ord_1").await,
            Some(("relay-b".to_owned(), 3000))
        );
        assert_eq!(wake.take_handed("ord_1"), None);

        // An ended hand-off is forgotten.
        let fence = pending_order(store, "ord_2", 2000).await;
        store
            .confirm(&fence, &order_of_the(store, &fence).await, 2010)
            .await
            .unwrap();
        wake.forget_ended(2010 + LEASE_MS);
        assert_eq!(wake.take_handed("ord_2"), None);
    }

    /// ord_1 CONFIRMED then CANCELLED (two events), ord_2 and ord_3
    /// CONFIRMED.
    async fn three_orders(store: &Store) {
        let fence = pending_order(store, "ord_1", 10).await;
        store
            .confirm(&fence, &order_of_the(store, &fence).await, 20)
            .await
            .unwrap();
        assert!(store.request_cancel("ord_1", 30).await.unwrap());
        let cancelling = store
            .try_lease("ord_1", "saga-2", 40, 5000)
            .await
            .unwrap()
            .expect("a cancelling order is leased");
        store
            .cancelled(&cancelling, &order_of_the(store, &cancelling).await, 50)
            .await
            .unwrap();
        for (order_id, at) in [("ord_2", 60), ("ord_3", 80)] {
            let fence = pending_order(store, order_id, at).await;
            store
                .confirm(&fence, &order_of_the(store, &fence).await, at + 10)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_batch_finish_removes_exactly_the_confirmed_events_and_releases_the_leases() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        batch_finish(&store, &table).await;
    }

    #[tokio::test]
    async fn a_batch_lease_skips_orders_another_relay_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (_, table) = open(dir.path()).await;
        batch_lease(&table).await;
    }

    #[tokio::test]
    async fn a_batch_read_gives_every_pending_event_of_the_longest_waiting_orders_but_not_of_orders_another_relay_holds(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        batch_read(&store, &table).await;
    }

    /// The batch statements and the recording unit's row-and-lease
    /// statement differ by database: the same checks on a real PostgreSQL,
    /// one database each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_batch_statements_work_on_postgresql() {
        let postgres = testkit::Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let open_pg = |name: &'static str| {
            let url = postgres.create_database(name);
            let dir = dir.path().join(name);
            async move {
                let pool = mesh::storage::open("orders", Some(&url), &dir, &crate::MIGRATOR)
                    .await
                    .expect("open the orders database on PostgreSQL");
                let wake = Wake::new(RELAY, std::time::Duration::from_millis(LEASE_MS as u64));
                let store =
                    Store::with_outbox(pool, wake.clone()).expect("start the orders writer");
                let table = Table::over(&store);
                (store, table, wake)
            }
        };
        let (store, table, _) = open_pg("finish").await;
        batch_finish(&store, &table).await;
        let (_, table, _) = open_pg("lease").await;
        batch_lease(&table).await;
        let (store, table, _) = open_pg("read").await;
        batch_read(&store, &table).await;
        let (store, table, wake) = open_pg("hand_off").await;
        committed_hand_off(&store, &table, &wake).await;
    }

    async fn batch_finish(store: &Store, table: &Table) {
        three_orders(store).await;
        let events = table.pending_of("ord_1").await.unwrap();
        let (confirmed, cancelled) = (events[0].event_id.clone(), events[1].event_id.clone());
        let second = table.pending_of("ord_2").await.unwrap()[0].event_id.clone();
        let unrelated = table.pending_of("ord_3").await.unwrap()[0].event_id.clone();
        let taken = table
            .lease_batch(
                &["ord_1".into(), "ord_2".into(), "ord_3".into()],
                RELAY,
                100,
                1100,
            )
            .await
            .unwrap();
        assert_eq!(taken.len(), 3);

        // ord_1: the first event went out, the second failed, and an event
        // of ord_3 named under it by mistake is not touched; ord_2's went
        // out; ord_3 published nothing.
        let outcomes = vec![
            Outcome {
                order_id: "ord_1".into(),
                confirmed: vec![confirmed, unrelated.clone()],
                failed: Some((cancelled.clone(), "the broker is down".to_owned())),
                claim_only: false,
            },
            Outcome {
                order_id: "ord_2".into(),
                confirmed: vec![second],
                failed: None,
                claim_only: false,
            },
            nothing_of("ord_3"),
        ];
        table.finish(RELAY, outcomes).await.unwrap();
        let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(
            "SELECT event_id, published_at_unix_ms, attempts, last_error FROM outbox ORDER BY order_id, sequence",
        )
        .fetch_all(&table.pool)
        .await
        .unwrap();
        assert_eq!(
            rows,
            [
                (cancelled, 0, 1, "the broker is down".to_owned()),
                (unrelated, 0, 0, String::new()),
            ],
            "the published events of ord_1 and ord_2 left the outbox; the failed one \
             stays with its attempt, and an event named under another order stays pending"
        );
        for order_id in ["ord_1", "ord_2", "ord_3"] {
            assert_eq!(lease_of(table, order_id).await, None, "{order_id} released");
        }
        assert_eq!(table.backlog().await.unwrap(), (2, Some(50)));
    }

    async fn batch_lease(table: &Table) {
        assert!(table.lease("held", "relay-b", 100, 2000).await.unwrap());
        assert!(table.lease("expired", "relay-b", 100, 500).await.unwrap());
        assert!(table.lease("own", RELAY, 100, 600).await.unwrap());
        let wanted: Vec<String> = ["held", "free", "own", "expired"]
            .into_iter()
            .map(String::from)
            .collect();
        let mut taken = table.lease_batch(&wanted, RELAY, 1000, 3000).await.unwrap();
        taken.sort();
        assert_eq!(taken, ["expired", "free", "own"]);
        assert_eq!(
            lease_of(table, "held").await,
            Some(("relay-b".into(), 2000))
        );
        for order_id in ["free", "own", "expired"] {
            assert_eq!(lease_of(table, order_id).await, Some((RELAY.into(), 3000)));
        }
        assert!(table
            .lease_batch(&[], RELAY, 1000, 3000)
            .await
            .unwrap()
            .is_empty());
    }

    async fn batch_read(store: &Store, table: &Table) {
        three_orders(store).await;
        let read = |limit: i64, now: i64| {
            let table = table.clone();
            async move {
                table
                    .pending_batch(limit, RELAY, now)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|row| (row.order_id, row.sequence))
                    .collect::<Vec<_>>()
            }
        };
        let all = vec![
            ("ord_1".to_owned(), 1),
            ("ord_1".to_owned(), 2),
            ("ord_2".to_owned(), 1),
            ("ord_3".to_owned(), 1),
        ];
        assert_eq!(read(10, 0).await, all);
        assert_eq!(
            read(2, 0).await,
            all[..3],
            "a limit counts orders, not events"
        );
        // The committing units leased the orders to this relay until
        // 1050 at most. relay-b holds ord_1 from 2000 until 3000: left out
        // while that lasts; this relay's own lease does not hide anything.
        assert!(table.lease("ord_1", "relay-b", 2000, 3000).await.unwrap());
        assert!(table.lease("ord_2", RELAY, 2000, 3000).await.unwrap());
        assert_eq!(read(10, 2500).await, all[2..]);
        assert_eq!(read(10, 3000).await, all, "an ended lease hides nothing");
        let fresh = table
            .pending_of_orders(&["ord_3".into(), "ord_1".into()])
            .await
            .unwrap();
        let fresh: Vec<(String, i64)> = fresh
            .into_iter()
            .map(|row| (row.order_id, row.sequence))
            .collect();
        assert_eq!(fresh, [all[0].clone(), all[1].clone(), all[3].clone()]);
        assert!(table.pending_of_orders(&[]).await.unwrap().is_empty());
    }

    /// `order_id`'s only pending event, an OrderConfirmed, with its body.
    async fn only_confirmed(table: &Table, order_id: &str) -> (Pending, OrderConfirmed) {
        let mut events = table.pending_of(order_id).await.unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        let event = events.remove(0);
        let body = <OrderConfirmed as prost::Message>::decode(event.body.as_slice()).unwrap();
        (event, body)
    }

    /// Confirms `fence`'s order at `at` as the saga would, with the order
    /// as stored.
    /// A row whose body is not hex (a damaged file, a hand edit) holds back
    /// its own order's events, all of them, and no other order's: one such
    /// row once stopped the relay for every order.
    #[tokio::test]
    async fn an_unreadable_row_holds_back_its_order_and_the_other_orders_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let fence = pending_order(&store, "ord_good", 10).await;
        confirm_as_stored(&store, &fence, 20).await;
        for (event_id, sequence, payload) in [("bad-1", 1, "+f"), ("bad-2", 2, "00")] {
            sqlx::query(
                "INSERT INTO outbox (event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms, published_at_unix_ms, attempts, last_error) \
                 VALUES (?, 'ord_bad', ?, 'orders', 'mesh.events.v1.OrderConfirmed', ?, '', '', 5, 0, 0, '')",
            )
            .bind(event_id)
            .bind(sequence)
            .bind(payload)
            .execute(store.pool())
            .await
            .unwrap();
        }
        for _ in 0..2 {
            let batch = table.pending_batch(64, RELAY, 100).await.unwrap();
            let orders: Vec<&str> = batch.iter().map(|event| event.order_id.as_str()).collect();
            assert_eq!(orders, ["ord_good"]);
        }
        assert!(table.pending_of("ord_bad").await.unwrap().is_empty());
    }

    /// A CONFIRMED order cancelled as the saga does it: requested at `at`,
    /// leased at `at + 10`, CANCELLED at `at + 20`.
    async fn cancel_as_stored(store: &Store, order_id: &str, at: i64) {
        assert!(store.request_cancel(order_id, at).await.unwrap());
        let cancelling = store
            .try_lease(order_id, "owner-2", at + 10, 5000)
            .await
            .unwrap()
            .expect("a cancelling order is leased");
        store
            .cancelled(
                &cancelling,
                &order_of_the(store, &cancelling).await,
                at + 20,
            )
            .await
            .unwrap();
    }

    async fn confirm_as_stored(store: &Store, fence: &Fence, at: i64) {
        store
            .confirm(fence, &order_of_the(store, fence).await, at)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_final_write_from_a_stale_saga_order_records_the_order_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let fence = pending_order(&store, "ord_1", 10).await;
        let stored = order_of_the(&store, &fence).await;
        let mut stale = stored.clone();
        stale.user_id = "u_somebody_else".into();
        stale.total_cents += 12_345;
        stale.currency = "USD".into();

        let confirmed = store.confirm(&fence, &stale, 20).await.unwrap();
        assert_eq!(confirmed.user_id, stored.user_id);
        let (_, body) = only_confirmed(&table, "ord_1").await;
        assert_eq!(
            (
                body.user_id.as_str(),
                body.total_cents,
                body.currency.as_str()
            ),
            (
                stored.user_id.as_str(),
                stored.total_cents,
                stored.currency.as_str()
            ),
            "the event describes the row the write left, not the caller's copy"
        );
        assert_eq!(body.sequence, 1);
    }

    #[tokio::test]
    async fn a_final_write_after_an_earlier_event_takes_the_next_number_and_a_lease_row() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table, wake) = open_with_wake(dir.path()).await;
        let fence = pending_order(&store, "ord_1", 10).await;
        // As if the order had had an event already (its row was pruned).
        sqlx::query("UPDATE orders SET event_sequence = 1 WHERE order_id = $1")
            .bind("ord_1")
            .execute(&table.pool)
            .await
            .unwrap();

        confirm_as_stored(&store, &fence, 20).await;
        let (event, body) = only_confirmed(&table, "ord_1").await;
        assert_eq!((event.sequence, body.sequence), (2, 2));
        assert_eq!(
            lease_of(&table, "ord_1").await,
            Some((RELAY.to_owned(), 20 + LEASE_MS)),
            "a later event is leased by a lease row, not a claim"
        );
        assert_eq!(wake.take_handed("ord_1"), Some(20 + LEASE_MS));
    }

    #[tokio::test]
    async fn finishing_a_claim_only_order_leaves_lease_rows_alone_and_others_release_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, table) = open(dir.path()).await;
        for order_id in ["ord_1", "ord_2"] {
            assert!(table
                .lease(order_id, RELAY, 10, 10 + LEASE_MS)
                .await
                .unwrap());
        }
        let outcome = |order_id: &str, claim_only| Outcome {
            claim_only,
            ..nothing_of(order_id)
        };
        table
            .finish(RELAY, vec![outcome("ord_1", true), outcome("ord_2", false)])
            .await
            .unwrap();
        assert_eq!(
            lease_of(&table, "ord_1").await,
            Some((RELAY.to_owned(), 10 + LEASE_MS))
        );
        assert_eq!(lease_of(&table, "ord_2").await, None);
    }
}
