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
    // Fixed statements, each prepared once and run per event or per order:
    // on this thread a statement costs no round trip, while the pool's
    // batch statements have a text of their own for every batch shape,
    // which SQLite would parse anew at every round (and keep, in a slot of
    // the connection's statement cache).
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
        let for_one_order = sql(1);
        for order_id in orders {
            NumberedArgs::new()
                .arg(owner.to_owned())
                .arg(order_id.to_owned())
                .execute(connection, &for_one_order)?;
        }
    }
    Ok(())
}
