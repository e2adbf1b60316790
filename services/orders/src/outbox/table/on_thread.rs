//! The relay's bookkeeping unit ([`super::Table::finish`]) on a SQLite
//! file's writer thread: the pool unit's statements, with the same SQL.

use mesh::storage::NumberedArgs;
use rusqlite::Connection;

use super::{
    bounded_error, failed_orders, leased_orders, release_sql, unclaim_sql, Outcome, FAILED_ATTEMPT,
    REMOVE_ONE,
};
use crate::store::StoreError;

/// Removes the confirmed events, records failed attempts, releases the
/// leases and gives up the claims of failed orders, as
/// [`super::Table::finish`] does through the pool.
pub(super) fn finish(
    connection: &Connection,
    owner: &str,
    outcomes: &[Outcome],
) -> Result<(), StoreError> {
    // One fixed statement per confirmed event, prepared once: on this
    // thread a statement costs no round trip, and the batch's statement
    // (the pool's) has a text of its own for every batch shape, which
    // SQLite would parse anew at every round.
    for outcome in outcomes {
        for event_id in &outcome.confirmed {
            NumberedArgs::new()
                .arg(outcome.order_id.clone())
                .arg(event_id.clone())
                .execute(connection, REMOVE_ONE)?;
        }
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
