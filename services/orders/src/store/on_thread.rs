//! orders' write units on a SQLite file's writer thread
//! ([`mesh::storage::SqliteWriter`]): the pool units of the parent module,
//! statement for statement and with the same SQL, run where the connection
//! lives (each statement prepared once and cached; its `$n` arguments bound
//! by name). A statement here costs no hand-off between threads, so the
//! units are the plain statement-at-a-time form (no statements folded into
//! one query, as SQLite's pool units do).

use mesh::storage::NumberedArgs;
use rusqlite::Connection;

use super::{
    changes_for_consumers, events, events::Cause, fence_args, leased, order_from_row, order_sql,
    parse_status, priced_sql, Fence, Line, Order, OrderStatus, PendingRow, Priced, StoreError,
    DEFER_READ, DEFER_WRITE, INSERT_LINE, INSERT_PENDING, LINES_OF, PARKED_STATUS, PRICE_LINE,
    RESOLVE,
};
use crate::domain::{KeySource, Step};

/// [`super::insert_pending_in`]: the order and its lines unless its request
/// id is taken (`false`, nothing written).
pub(super) fn insert_pending(
    connection: &Connection,
    row: &PendingRow,
) -> Result<bool, StoreError> {
    let inserted = NumberedArgs::new()
        .arg(row.order_id.clone())
        .arg(row.request_id.clone())
        .arg(row.user_id.clone())
        .arg(row.currency.clone())
        .arg(OrderStatus::Pending.as_str().to_owned())
        .arg(Step::Reserve.as_str().to_owned())
        .arg(row.now_unix_ms)
        .arg(row.owner.clone())
        .arg(row.lease_until_unix_ms)
        .arg(KeySource::OrderId.as_str().to_owned())
        .execute(connection, INSERT_PENDING)?;
    if inserted == 0 {
        return Ok(false);
    }
    for (line_no, item) in row.items.iter().enumerate() {
        NumberedArgs::new()
            .arg(row.order_id.clone())
            .arg(line_no as i64)
            .arg(item.sku.clone())
            .arg(item.quantity)
            .execute(connection, INSERT_LINE)?;
    }
    Ok(true)
}

/// [`super::Store::defer`]'s unit.
pub(super) fn defer(
    connection: &Connection,
    fence: &Fence,
    now_unix_ms: i64,
    backoff_ms: &(dyn Fn(i64) -> i64 + Send + Sync),
) -> Result<(), StoreError> {
    let failed: Option<i64> =
        fence_args(NumberedArgs::new(), fence)
            .first_row(connection, DEFER_READ, |row| row.get(0))?;
    let Some(failed) = failed else {
        return Ok(());
    };
    let failed = failed.saturating_add(1);
    fence_args(
        NumberedArgs::new()
            .arg(failed)
            .arg(now_unix_ms.saturating_add(backoff_ms(failed))),
        fence,
    )
    .execute(connection, DEFER_WRITE)?;
    Ok(())
}

/// [`super::Store::resolve`]'s unit: the resolved order and the end of the
/// relay's lease its event took, or `None` if the order is not parked.
pub(super) fn resolve(
    connection: &Connection,
    order_id: &str,
    status: OrderStatus,
    reason: &str,
    now_unix_ms: i64,
    event: Option<Cause>,
) -> Result<Option<(Order, Option<events::Handed>)>, StoreError> {
    let from: Option<String> = NumberedArgs::new().arg(order_id.to_owned()).first_row(
        connection,
        PARKED_STATUS,
        |row| row.get(0),
    )?;
    let Some(from) = from.map(|from| parse_status(&from)).transpose()? else {
        return Ok(None);
    };
    let done = NumberedArgs::new()
        .arg(status.as_str().to_owned())
        .arg(Step::Done.as_str().to_owned())
        .arg(reason.to_owned())
        .arg(now_unix_ms)
        .arg(order_id.to_owned())
        .arg(from.as_str().to_owned())
        .execute(connection, RESOLVE)?;
    if done != 1 {
        return Ok(None);
    }
    let order = read_order(connection, order_id)?;
    let mut handed = None;
    if let Some(event) = event.filter(|_| changes_for_consumers(from, status)) {
        handed = events::record_on_thread(connection, &order, &event)?;
    }
    Ok(Some((order, handed)))
}

/// [`super::Store::priced`]'s unit: the fenced step, then each line's price.
pub(super) fn priced(
    connection: &Connection,
    fence: &Fence,
    priced: &Priced,
) -> Result<(), StoreError> {
    let updated = fence_args(
        NumberedArgs::new()
            .arg(Step::Charge.as_str().to_owned())
            .arg(priced.total_cents)
            .arg(priced.currency.clone())
            .arg(priced.now_unix_ms)
            .arg(priced.lease_until_unix_ms),
        fence,
    )
    .execute(connection, priced_sql())?;
    // Nothing written yet: the unit's savepoint has nothing to undo.
    leased(updated as u64, &fence.order_id)?;
    for (sku, price) in &priced.prices {
        NumberedArgs::new()
            .arg(*price)
            .arg(fence.order_id.clone())
            .arg(sku.clone())
            .execute(connection, PRICE_LINE)?;
    }
    Ok(())
}

/// [`super::Store::finish`]'s unit: the fenced final write `sql` (returning
/// the row and its event number) with `args`, the order as written with the
/// saga's `lines`, and its event recorded (the end of the relay's lease it
/// took, if it took one).
pub(super) fn finish(
    connection: &Connection,
    sql: &str,
    args: &NumberedArgs,
    order_id: &str,
    lines: Vec<Line>,
    event: Option<Cause>,
) -> Result<(Order, Option<events::Handed>), StoreError> {
    let written = args.first_row(connection, sql, |row| {
        Ok((order_from_row(row), row.get::<_, i64>("event_sequence")))
    })?;
    let (order, sequence) = written.ok_or_else(|| StoreError::LeaseLost {
        order_id: order_id.to_owned(),
    })?;
    let order = Order { lines, ..order? };
    let handed = match event {
        None => None,
        Some(cause) => events::record_numbered_on_thread(connection, &order, &cause, sequence?)?,
    };
    Ok((order, handed))
}

/// [`super::read_order`] on this connection.
pub(super) fn read_order(connection: &Connection, order_id: &str) -> Result<Order, StoreError> {
    let order = NumberedArgs::new()
        .arg(order_id.to_owned())
        .first_row(connection, order_sql(), |row| Ok(order_from_row(row)))?
        .ok_or_else(|| StoreError::NotFound {
            order_id: order_id.to_owned(),
        })??;
    with_lines(connection, order)
}

/// [`super::Store::find_by_request`] on a reader's connection.
pub(super) fn find_by_request(
    connection: &Connection,
    request_id: &str,
) -> Result<Option<Order>, StoreError> {
    let order = NumberedArgs::new()
        .arg(request_id.to_owned())
        .first_row(connection, &super::BY_REQUEST, |row| {
            Ok(order_from_row(row))
        })?
        .transpose()?;
    order.map(|order| with_lines(connection, order)).transpose()
}

/// `order` with its lines, read on this connection.
fn with_lines(connection: &Connection, order: Order) -> Result<Order, StoreError> {
    let lines =
        NumberedArgs::new()
            .arg(order.order_id.clone())
            .rows(connection, LINES_OF, |row| {
                Ok(Line {
                    sku: row.get(0)?,
                    quantity: row.get(1)?,
                    unit_price_cents: row.get(2)?,
                })
            })?;
    Ok(Order { lines, ..order })
}
