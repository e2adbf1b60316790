//! The relay's bookkeeping unit ([`super::Table::finish`]) on a SQLite
//! file's writer thread: the pool unit's statements, with the same SQL.

use mesh::storage::NumberedArgs;
use rusqlite::Connection;

use super::{
    bounded_error, failed_orders, leased_orders, mark_confirmed_sql, release_sql, unclaim_sql,
    Outcome, FAILED_ATTEMPT,
};
use crate::store::StoreError;

/// Marks the confirmed events, records failed attempts, releases the
/// leases and gives up the claims of failed orders, as
/// [`super::Table::finish`] does through the pool.
pub(super) fn finish(
    connection: &Connection,
    owner: &str,
    outcomes: &[Outcome],
    now_unix_ms: i64,
) -> Result<(), StoreError> {
    let confirmed: Vec<usize> = outcomes
        .iter()
        .map(|outcome| outcome.confirmed.len())
        .filter(|confirmed| *confirmed > 0)
        .collect();
    if !confirmed.is_empty() {
        let mut args = NumberedArgs::new().arg(now_unix_ms.max(1));
        for outcome in outcomes
            .iter()
            .filter(|outcome| !outcome.confirmed.is_empty())
        {
            args.push(outcome.order_id.clone());
            for event_id in &outcome.confirmed {
                args.push(event_id.clone());
            }
        }
        args.execute(connection, &mark_confirmed_sql(&confirmed))?;
    }
    for outcome in outcomes {
        let Some((event_id, error)) = &outcome.failed else {
            continue;
        };
        NumberedArgs::new()
            .arg(bounded_error(error))
            .arg(event_id.clone())
            .arg(outcome.order_id.clone())
            .execute(connection, FAILED_ATTEMPT)?;
    }
    for (orders, sql) in [
        (leased_orders(outcomes), release_sql as fn(usize) -> String),
        (failed_orders(outcomes), unclaim_sql),
    ] {
        if orders.is_empty() {
            continue;
        }
        let mut args = NumberedArgs::new().arg(owner.to_owned());
        for order_id in &orders {
            args.push((*order_id).to_owned());
        }
        args.execute(connection, &sql(orders.len()))?;
    }
    Ok(())
}
