//! payments' write units on a SQLite file's writer thread
//! ([`mesh::storage::SqliteWriter`]): the statements of the pool's units
//! (the parent module), run where the connection lives, each prepared once
//! and cached by the connection.

use rusqlite::{params, OptionalExtension as _};

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
            params![
                payment_id,
                charge.idempotency_key,
                charge.user_id,
                charge.amount_cents,
                charge.currency,
                decision.status().as_str(),
                decision.reason(),
                now_unix_ms,
            ],
            columns,
        )
        .optional()?;
    if let Some(columns) = inserted {
        return Ok(ChargeOutcome::Created(payment(columns)?));
    }
    let existing = connection
        .prepare_cached(BY_KEY)?
        .query_row([&charge.idempotency_key], columns)
        .optional()?;
    replayed(charge, existing.map(payment).transpose()?)
}

/// The refund's unit: one conditional write, then the payment as it left it.
pub(super) fn refund(
    connection: &rusqlite::Connection,
    payment_id: &str,
    now_unix_ms: i64,
) -> Result<Payment, StoreError> {
    connection.prepare_cached(REFUND)?.execute(params![
        PaymentStatus::Refunded.as_str(),
        now_unix_ms,
        payment_id,
        PaymentStatus::Captured.as_str(),
    ])?;
    let row = connection
        .prepare_cached(BY_ID)?
        .query_row([payment_id], columns)
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
