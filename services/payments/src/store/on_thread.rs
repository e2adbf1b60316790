//! payments' write units on a SQLite file's writer thread
//! ([`mesh::storage::SqliteWriter`]): the statements of the pool's units
//! (the parent module), with the same SQL, run where the connection lives,
//! each prepared once and cached by the connection (its `$n` arguments bound
//! by name).

use rusqlite::{named_params, OptionalExtension as _};

use super::{
    refunded, replayed, ChargeOutcome, Payment, StoreError, BY_ID, BY_KEY, INSERT_CHARGE, REFUND,
};
use crate::domain::{Charge, Decision, PaymentStatus};

/// The charge's unit: insert unless the key exists (the new row comes back
/// from the insert itself), else the key's payment.
pub(super) fn charge(
    connection: &rusqlite::Connection,
    payment_id: &str,
    charge: &Charge,
    decision: &Decision,
    now_unix_ms: i64,
) -> Result<ChargeOutcome, StoreError> {
    let inserted = connection
        .prepare_cached(INSERT_CHARGE)?
        .query_row(
            named_params! {
                "$1": payment_id,
                "$2": charge.idempotency_key,
                "$3": charge.user_id,
                "$4": charge.amount_cents,
                "$5": charge.currency,
                "$6": decision.status().as_str(),
                "$7": decision.reason(),
                "$8": now_unix_ms,
            },
            columns,
        )
        .optional()?;
    if let Some(columns) = inserted {
        return Ok(ChargeOutcome::Created(payment(columns)?));
    }
    let existing = connection
        .prepare_cached(BY_KEY)?
        .query_row(named_params! { "$1": charge.idempotency_key }, columns)
        .optional()?;
    replayed(charge, existing.map(payment).transpose()?)
}

/// The refund's unit: one conditional write, then the payment as it left it.
pub(super) fn refund(
    connection: &rusqlite::Connection,
    payment_id: &str,
    now_unix_ms: i64,
) -> Result<Payment, StoreError> {
    connection.prepare_cached(REFUND)?.execute(named_params! {
        "$1": PaymentStatus::Refunded.as_str(),
        "$2": now_unix_ms,
        "$3": payment_id,
        "$4": PaymentStatus::Captured.as_str(),
    })?;
    let row = connection
        .prepare_cached(BY_ID)?
        .query_row(named_params! { "$1": payment_id }, columns)
        .optional()?;
    refunded(payment_id, row.map(payment).transpose()?)
}

/// A payment's columns as they come back (the parent's `columns!()`).
type Columns = (String, String, String, i64, String, String, String, i64);

fn columns(row: &rusqlite::Row<'_>) -> rusqlite::Result<Columns> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

fn payment(columns: Columns) -> Result<Payment, StoreError> {
    let (payment_id, key, user_id, amount_cents, currency, status, reason, created) = columns;
    Payment::from_columns(
        payment_id,
        key,
        user_id,
        amount_cents,
        currency,
        &status,
        reason,
        created,
    )
}
