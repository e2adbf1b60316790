//! inventory's write units on a SQLite file's writer thread
//! ([`mesh::storage::SqliteWriter`]): the pool's units of the parent module,
//! statement for statement and with the same SQL, run where the connection
//! lives (each statement prepared once and cached by the connection; its
//! `$n` arguments bound by name). A statement here costs no hand-off
//! between threads, so the units keep the plain claim-first order instead of
//! folding statements into fewer queries.

use rusqlite::{named_params, OptionalExtension as _};

use super::{
    by_sku, items_move_sql, lines_by_sku, replayed, short_in_request_order, units_missing,
    ItemRecord, LineRecord, Move, Priced, ReservationHead, ReservationRecord, StoreError, Taken,
    ADD_STOCK, AVAILABLE, CLAIM, INSERT_LINE, LINES_OF, RESERVATION_OF, SET_TOTAL, TAKE,
};
use crate::domain::{self, Line, ReservationRequest, Shortage, State, StockAddition};

type Connection = rusqlite::Connection;

/// AddStock's unit: the item after the upsert, or `None` if refused.
pub(super) fn add_stock(
    connection: &Connection,
    addition: &StockAddition,
    now_unix_ms: i64,
) -> Result<Option<ItemRecord>, StoreError> {
    Ok(connection
        .prepare_cached(ADD_STOCK)?
        .query_row(
            named_params! {
                "$1": addition.sku,
                "$2": addition.quantity,
                "$3": addition.unit_price_cents,
                "$4": now_unix_ms,
                "$5": domain::MAX_STOCK - addition.quantity,
                "$6": addition.currency,
            },
            |row| {
                Ok(ItemRecord {
                    sku: row.get(0)?,
                    available: row.get(1)?,
                    reserved: row.get(2)?,
                    unit_price_cents: row.get(3)?,
                    committed: row.get(4)?,
                    currency: row.get(5)?,
                })
            },
        )
        .optional()?)
}

/// Reserve's unit ([`super::reserve_in`]'s statements).
pub(super) fn reserve(
    connection: &Connection,
    request: ReservationRequest,
    expires_at_unix_ms: i64,
    now_unix_ms: i64,
) -> Result<ReservationRecord, StoreError> {
    let id = &request.reservation_id;
    let claimed = connection.prepare_cached(CLAIM)?.execute(named_params! {
        "$1": id,
        "$2": State::Reserved.as_str(),
        "$3": now_unix_ms,
        "$4": expires_at_unix_ms,
    })?;
    if claimed == 0 {
        return existing_reservation(connection, &request);
    }
    let mut taken = Vec::new();
    let mut short = Vec::new();
    for line in by_sku(&request.lines) {
        let row = connection
            .prepare_cached(TAKE)?
            .query_row(
                named_params! { "$1": line.quantity, "$2": line.sku, "$3": now_unix_ms },
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
            )
            .optional()?;
        match row {
            Some((unit_price_cents, currency)) => taken.push(Taken {
                sku: line.sku.clone(),
                unit_price_cents,
                currency,
            }),
            None => short.push(line),
        }
    }
    if !short.is_empty() {
        return Err(shortages(connection, &request, &short)?);
    }
    let priced = Priced::of(&request, &taken)?;
    for (line_no, line) in priced.lines.iter().enumerate() {
        connection
            .prepare_cached(INSERT_LINE)?
            .execute(named_params! {
                "$1": id,
                "$2": line_no as i64,
                "$3": line.sku,
                "$4": line.quantity,
                "$5": line.unit_price_cents,
            })?;
    }
    connection
        .prepare_cached(SET_TOTAL)?
        .execute(named_params! {
            "$1": id,
            "$2": priced.total_cents,
            "$3": priced.currency,
        })?;
    Ok(priced.into_record(request.reservation_id, expires_at_unix_ms))
}

/// A settle's unit ([`super::settle_in`]'s statements).
pub(super) fn settle(
    connection: &Connection,
    reservation_id: &str,
    change: Move,
    now_unix_ms: i64,
) -> Result<ReservationRecord, StoreError> {
    let moved = connection
        .prepare_cached(change.sql())?
        .query_row(
            named_params! { "$1": reservation_id, "$2": now_unix_ms },
            head,
        )
        .optional()?;
    let Some(moved) = moved else {
        return unmoved(connection, reservation_id, change);
    };
    let reservation = moved.with_lines(reservation_id, lines_of(connection, reservation_id)?)?;
    let statement = items_move_sql(reservation.state);
    for line in lines_by_sku(&reservation.lines) {
        let updated = connection
            .prepare_cached(statement)?
            .execute(named_params! {
                "$1": line.quantity,
                "$2": line.sku,
                "$3": now_unix_ms,
            })?;
        if updated != 1 {
            return Err(units_missing(line, reservation_id));
        }
    }
    Ok(reservation)
}

/// [`super::unmoved`] on this connection.
fn unmoved(
    connection: &Connection,
    reservation_id: &str,
    change: Move,
) -> Result<ReservationRecord, StoreError> {
    change.unmoved(
        reservation_id,
        load_reservation(connection, reservation_id)?,
    )
}

/// [`super::existing_reservation`] on this connection.
fn existing_reservation(
    connection: &Connection,
    request: &ReservationRequest,
) -> Result<ReservationRecord, StoreError> {
    replayed(
        request,
        load_reservation(connection, &request.reservation_id)?,
    )
}

/// [`super::shortages`] on this connection.
fn shortages(
    connection: &Connection,
    request: &ReservationRequest,
    short: &[&Line],
) -> Result<StoreError, StoreError> {
    let mut shortages = Vec::new();
    for line in short_in_request_order(request, short) {
        let available = connection
            .prepare_cached(AVAILABLE)?
            .query_row(named_params! { "$1": line.sku }, |row| row.get::<_, i64>(0))
            .optional()?;
        shortages.push(Shortage {
            sku: line.sku.clone(),
            asked: line.quantity,
            available,
        });
    }
    Ok(StoreError::Insufficient(shortages))
}

fn load_reservation(
    connection: &Connection,
    reservation_id: &str,
) -> Result<Option<ReservationRecord>, StoreError> {
    let Some(head) = connection
        .prepare_cached(RESERVATION_OF)?
        .query_row(named_params! { "$1": reservation_id }, head)
        .optional()?
    else {
        return Ok(None);
    };
    Ok(Some(head.with_lines(
        reservation_id,
        lines_of(connection, reservation_id)?,
    )?))
}

fn lines_of(connection: &Connection, reservation_id: &str) -> Result<Vec<LineRecord>, StoreError> {
    let mut statement = connection.prepare_cached(LINES_OF)?;
    let lines = statement
        .query_map(named_params! { "$1": reservation_id }, |row| {
            Ok(LineRecord {
                sku: row.get(0)?,
                quantity: row.get(1)?,
                unit_price_cents: row.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(lines)
}

/// A reservation's columns, in [`super::RESERVATION_COLUMNS`]' order.
fn head(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReservationHead> {
    Ok(ReservationHead {
        state: row.get(0)?,
        total_cents: row.get(1)?,
        currency: row.get(2)?,
        expires_at_unix_ms: row.get(3)?,
    })
}
