//! SQLite's Reserve and settle units in fewer round trips to the
//! connection's thread.
//!
//! sqlx's SQLite driver runs every query on the connection's own thread and
//! waits for its answer, so each statement costs a cross-thread hand-off and
//! two wake-ups, which is most of what a statement costs here. SQLite runs
//! several statements sent as one query, in order, on that thread, sharing
//! the query's numbered arguments (as orders' final write does, ADR 0020).
//! So on SQLite:
//!
//! - **Reserve** is two queries instead of `2 + 2n` statements for `n`
//!   lines: the first asks whether the id is taken and takes each line's
//!   stock unless it is (`NOT EXISTS`, in SKU order), returning the prices;
//!   the second records the reservation with its total and its lines.
//! - **A settle** (Release, Commit, Restock, the sweeper's release) is one
//!   query instead of `2 + n`: the conditional state change, then every
//!   line's item moved by one `UPDATE … FROM reservation_lines` that applies
//!   only if the change did (`changes() = 1`: the change is the last
//!   statement before it that wrote), then the lines read back.
//!
//! The group-commit writer's transaction is `BEGIN IMMEDIATE`, so the write
//! lock is held before the first statement and nothing runs between the
//! statements of a query: the check and the takes see the same database.
//! PostgreSQL keeps the statement-at-a-time units of the parent module (a
//! prepared statement there holds one command, and its concurrent writers
//! need the claim-first order). Each query's rows are told apart by their
//! column names, which differ from statement to statement.

use std::sync::OnceLock;

use mesh::storage::SqlPerCount;
use sqlx::{any::AnyRow, AnyConnection, Row};

use super::{
    by_sku, existing_reservation, line_record, reservation_with, shortages, units_missing, unmoved,
    Move, Priced, StoreError, Taken, LINES_OF, RESERVATION_COLUMNS,
};
use crate::domain::{ReservationRequest, State, MAX_LINES};

/// [`super::reserve_in`] on SQLite: two queries.
pub(super) async fn reserve_in(
    connection: &mut AnyConnection,
    request: ReservationRequest,
    expires_at_unix_ms: i64,
    now_unix_ms: i64,
) -> Result<super::ReservationRecord, StoreError> {
    let lines = by_sku(&request.lines);
    let mut takes = sqlx::query(take_sql(lines.len())?)
        .bind(&request.reservation_id)
        .bind(now_unix_ms);
    for line in &lines {
        takes = takes.bind(line.quantity).bind(&line.sku);
    }
    let rows = takes.fetch_all(&mut *connection).await?;
    if rows.iter().any(|row| row.try_column("id_taken").is_ok()) {
        // Nothing was taken: every take was conditional on the id being new.
        return existing_reservation(connection, &request).await;
    }
    let taken = rows
        .iter()
        .map(|row| {
            Ok(Taken {
                sku: row.try_get("sku")?,
                unit_price_cents: row.try_get("unit_price_cents")?,
                currency: row.try_get("currency")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    if taken.len() < lines.len() {
        let short: Vec<_> = lines
            .into_iter()
            .filter(|line| !taken.iter().any(|taken| taken.sku == line.sku))
            .collect();
        return Err(shortages(connection, &request, &short).await?);
    }
    let priced = Priced::of(&request, &taken)?;

    let mut record = sqlx::query(record_sql(priced.lines.len())?)
        .bind(&request.reservation_id)
        .bind(priced.total_cents)
        .bind(now_unix_ms)
        .bind(&priced.currency)
        .bind(expires_at_unix_ms);
    for line in &priced.lines {
        record = record
            .bind(&line.sku)
            .bind(line.quantity)
            .bind(line.unit_price_cents);
    }
    let written = record.execute(&mut *connection).await?.rows_affected();
    let expected = 1 + priced.lines.len() as u64;
    if written != expected {
        return Err(StoreError::Inconsistent(format!(
            "recording reservation {} wrote {written} rows, not {expected}",
            request.reservation_id
        )));
    }
    Ok(priced.into_record(request.reservation_id, expires_at_unix_ms))
}

/// [`super::settle_in`] on SQLite: one query.
pub(super) async fn settle_in(
    connection: &mut AnyConnection,
    reservation_id: &str,
    change: Move,
    now_unix_ms: i64,
) -> Result<super::ReservationRecord, StoreError> {
    let rows = sqlx::query(settle_sql(change))
        .bind(reservation_id)
        .bind(now_unix_ms)
        .fetch_all(&mut *connection)
        .await?;
    let mut moved: Option<&AnyRow> = None;
    let mut moved_skus = Vec::new();
    let mut lines = Vec::new();
    for row in &rows {
        if row.try_column("moved_sku").is_ok() {
            moved_skus.push(row.try_get::<String, _>("moved_sku")?);
        } else if row.try_column("quantity").is_ok() {
            lines.push(line_record(row)?);
        } else {
            moved = Some(row);
        }
    }
    let Some(moved) = moved else {
        return unmoved(connection, reservation_id, change).await;
    };
    if let Some(line) = lines.iter().find(|line| !moved_skus.contains(&line.sku)) {
        return Err(units_missing(line, reservation_id));
    }
    reservation_with(reservation_id, moved, lines)
}

/// The take query for `lines` lines: whether the id (`$1`) is taken (a row
/// with `id_taken`), then each line's take (`$3 + 2i` units of SKU
/// `$4 + 2i`, `$2` now) unless it is, each returning the item's price.
fn take_sql(lines: usize) -> Result<&'static str, StoreError> {
    static SQL: SqlPerCount<MAX_LINES> = SqlPerCount::new();
    let sql = SQL.get(lines, |lines| {
        let mut sql =
            String::from("SELECT 1 AS id_taken FROM reservations WHERE reservation_id = $1");
        for i in 0..lines {
            let quantity = 3 + 2 * i;
            let sku = quantity + 1;
            sql.push_str(&format!(
                "; UPDATE items SET available = available - ${quantity}, \
                    reserved = reserved + ${quantity}, updated_at_unix_ms = $2 \
                 WHERE sku = ${sku} AND available >= ${quantity} \
                   AND NOT EXISTS (SELECT 1 FROM reservations WHERE reservation_id = $1) \
                 RETURNING sku, unit_price_cents, currency"
            ));
        }
        sql
    });
    sql.ok_or_else(|| too_many(lines))
}

/// The record query for `lines` lines: the reservation (`$1` id, `$2`
/// total, `$3` now, `$4` currency, `$5` expiry), then its lines in one
/// INSERT (line `i`: SKU `$6 + 3i`, quantity, unit price).
fn record_sql(lines: usize) -> Result<&'static str, StoreError> {
    static SQL: SqlPerCount<MAX_LINES> = SqlPerCount::new();
    let sql = SQL.get(lines, |lines| {
        let values: Vec<String> = (0..lines)
            .map(|i| {
                let sku = 6 + 3 * i;
                format!("($1, {i}, ${sku}, ${}, ${})", sku + 1, sku + 2)
            })
            .collect();
        format!(
            "INSERT INTO reservations \
                (reservation_id, state, total_cents, created_at_unix_ms, updated_at_unix_ms, currency, expires_at_unix_ms) \
             VALUES ($1, '{reserved}', $2, $3, $3, $4, $5); \
             INSERT INTO reservation_lines \
                (reservation_id, line_no, sku, quantity, unit_price_cents) \
             VALUES {values}",
            reserved = State::Reserved.as_str(),
            values = values.join(", ")
        )
    });
    sql.ok_or_else(|| too_many(lines))
}

/// The settle query of `change` (`$1` the reservation, `$2` now): the
/// conditional state change returning the reservation, its items moved if
/// it applied (a row with `moved_sku` per item), its lines.
fn settle_sql(change: Move) -> &'static str {
    static SQL: [OnceLock<String>; 4] = [const { OnceLock::new() }; 4];
    let index = match change {
        Move::Release => 0,
        Move::Commit => 1,
        Move::Restock => 2,
        Move::ReleaseExpired => 3,
    };
    SQL[index].get_or_init(|| {
        // Where the units come from, and where they go: a reservation moved
        // out of RESERVED sells them if it became COMMITTED and puts them
        // back on the shelf if it became RELEASED (a Commit of an expired
        // one releases it); a restock puts sold units back.
        let items = match change {
            Move::Restock => {
                "committed = items.committed - l.quantity, \
                 available = items.available + l.quantity, \
                 updated_at_unix_ms = $2 \
                 FROM reservation_lines AS l \
                 WHERE changes() = 1 AND l.reservation_id = $1 AND items.sku = l.sku \
                   AND items.committed >= l.quantity"
            }
            Move::Release | Move::Commit | Move::ReleaseExpired => {
                "reserved = items.reserved - l.quantity, \
                 committed = items.committed \
                    + CASE WHEN r.state = 'COMMITTED' THEN l.quantity ELSE 0 END, \
                 available = items.available \
                    + CASE WHEN r.state = 'COMMITTED' THEN 0 ELSE l.quantity END, \
                 updated_at_unix_ms = $2 \
                 FROM reservation_lines AS l, reservations AS r \
                 WHERE changes() = 1 AND l.reservation_id = $1 AND r.reservation_id = $1 \
                   AND items.sku = l.sku AND items.reserved >= l.quantity"
            }
        };
        format!(
            "UPDATE reservations SET state = {state}, updated_at_unix_ms = $2 \
             WHERE reservation_id = $1 AND {condition} RETURNING {RESERVATION_COLUMNS}; \
             UPDATE items SET {items} RETURNING items.sku AS moved_sku; \
             {LINES_OF}",
            state = change.new_state_sql(),
            condition = change.condition_sql(),
        )
    })
}

/// A reservation with more lines than a request may have (validation
/// refuses them first).
fn too_many(lines: usize) -> StoreError {
    StoreError::Inconsistent(format!(
        "a reservation of {lines} lines (1 to {MAX_LINES} are accepted)"
    ))
}
