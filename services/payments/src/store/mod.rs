//! The payments table over `sqlx::AnyPool` (SQLite or PostgreSQL).
//!
//! Idempotency lives in the database, not in the process: `Charge` is one
//! `INSERT … ON CONFLICT (idempotency_key) DO NOTHING` followed by a `SELECT`
//! of the key, so instances sharing the database agree on one payment per key
//! whoever wins the race.
//!
//! Writes (`charge`, `refund`) go through the database's group-commit writer
//! ([`mesh::storage::Writer`]): a payment is answered only once the
//! transaction holding it has committed durably, and concurrent charges share
//! that commit. On a SQLite file the units run on the database's own thread
//! ([`on_thread`]); elsewhere through the pool (the functions below). Both
//! run the same statements.

mod on_thread;

use mesh::storage::{GroupCommitOptions, StorageError, WriteError, Writer};
use sqlx::{any::AnyRow, AnyConnection, AnyPool, Row};

use crate::domain::{Charge, Decision, PaymentStatus};

/// A stored payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// `pay_…`.
    pub payment_id: String,
    /// The caller's key.
    pub idempotency_key: String,
    /// Who paid.
    pub user_id: String,
    /// The amount.
    pub amount_cents: i64,
    /// Upper-case ISO 4217 code.
    pub currency: String,
    /// Where it is in its life.
    pub status: PaymentStatus,
    /// Why it was declined; empty otherwise.
    pub decline_reason: String,
    /// When it was charged.
    pub created_at_unix_ms: i64,
}

impl Payment {
    /// Whether this payment was made for exactly `charge`'s arguments.
    pub fn matches(&self, charge: &Charge) -> bool {
        self.user_id == charge.user_id
            && self.amount_cents == charge.amount_cents
            && self.currency == charge.currency
    }
}

/// What `charge` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// This call recorded a new payment.
    Created(Payment),
    /// The key had been charged before; this is that payment, untouched.
    Existing(Payment),
}

impl ChargeOutcome {
    /// The payment, new or not.
    pub fn payment(&self) -> &Payment {
        match self {
            ChargeOutcome::Created(payment) | ChargeOutcome::Existing(payment) => payment,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No payment has this id.
    #[error("payment {payment_id} not found")]
    NotFound {
        /// The id asked for.
        payment_id: String,
    },
    /// The idempotency key was charged before with other arguments.
    #[error("idempotency_key {key} was already used with different arguments")]
    KeyReused {
        /// The key.
        key: String,
    },
    /// Only captured payments can be refunded.
    #[error("payment {payment_id} was declined; there is nothing to refund")]
    Declined {
        /// The payment.
        payment_id: String,
    },
    /// A row the code cannot interpret (a bug or a foreign write).
    #[error("corrupt payments row: {0}")]
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
}

/// A payment's columns, in the order [`Payment::from_columns`] takes them.
macro_rules! columns {
    () => {
        "payment_id, idempotency_key, user_id, amount_cents, currency, status, decline_reason, created_at_unix_ms"
    };
}

/// The charge's insert: the new payment comes back, or nothing when the key
/// exists. $1 id, $2 key, $3 user, $4 amount, $5 currency, $6 status, $7
/// decline reason, $8 now.
const INSERT_CHARGE: &str = concat!(
    "INSERT INTO payments (payment_id, idempotency_key, user_id, amount_cents, currency, status, decline_reason, created_at_unix_ms, updated_at_unix_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING ",
    columns!()
);

/// The payment of a key: $1 the key.
const BY_KEY: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM payments WHERE idempotency_key = $1"
);

/// One payment: $1 its id.
const BY_ID: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM payments WHERE payment_id = $1"
);

/// The refund's write: $1 refunded, $2 now, $3 the payment, $4 captured.
const REFUND: &str = "UPDATE payments SET status = $1, updated_at_unix_ms = $2 \
     WHERE payment_id = $3 AND status = $4";

/// The payments table.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    writer: Writer,
}

impl Store {
    /// A store over an open, migrated pool; starts the database's writer
    /// (call inside a Tokio runtime).
    pub fn new(pool: AnyPool) -> Result<Self, StorageError> {
        let writer = Writer::start("payments", &pool, GroupCommitOptions::default())?;
        Ok(Self { pool, writer })
    }

    /// Records `charge` with `decision` under a new `payment_id`, unless its
    /// key was charged before: then returns that payment (same arguments) or
    /// [`StoreError::KeyReused`] (different arguments). Never records two
    /// payments for one key, even when instances race.
    pub async fn charge(
        &self,
        payment_id: &str,
        charge: &Charge,
        decision: &Decision,
        now_unix_ms: i64,
    ) -> Result<ChargeOutcome, StoreError> {
        let (payment_id, charge, decision) =
            (payment_id.to_owned(), charge.clone(), decision.clone());
        match &self.writer {
            Writer::Sqlite(writer) => {
                writer
                    .write(move |connection| {
                        on_thread::charge(connection, &payment_id, &charge, &decision, now_unix_ms)
                    })
                    .await
            }
            Writer::Pool(writer) => {
                writer
                    .write(move |connection| {
                        Box::pin(async move {
                            charge_in(connection, &payment_id, &charge, &decision, now_unix_ms)
                                .await
                        })
                    })
                    .await
            }
        }
    }

    /// Refunds a captured payment; a refunded one is returned unchanged.
    pub async fn refund(&self, payment_id: &str, now_unix_ms: i64) -> Result<Payment, StoreError> {
        let payment_id = payment_id.to_owned();
        match &self.writer {
            Writer::Sqlite(writer) => {
                writer
                    .write(move |connection| {
                        on_thread::refund(connection, &payment_id, now_unix_ms)
                    })
                    .await
            }
            Writer::Pool(writer) => {
                writer
                    .write(move |connection| {
                        Box::pin(
                            async move { refund_in(connection, &payment_id, now_unix_ms).await },
                        )
                    })
                    .await
            }
        }
    }

    /// One payment.
    pub async fn get(&self, payment_id: &str) -> Result<Payment, StoreError> {
        let row = sqlx::query(BY_ID)
            .bind(payment_id)
            .fetch_optional(&self.pool)
            .await?;
        found(payment_id, row)
    }
}

/// The charge's write unit: insert unless the key exists (the new row comes
/// back from the insert itself), else read the key's payment.
async fn charge_in(
    connection: &mut AnyConnection,
    payment_id: &str,
    charge: &Charge,
    decision: &Decision,
    now_unix_ms: i64,
) -> Result<ChargeOutcome, StoreError> {
    let inserted = sqlx::query(INSERT_CHARGE)
        .bind(payment_id)
        .bind(&charge.idempotency_key)
        .bind(&charge.user_id)
        .bind(charge.amount_cents)
        .bind(&charge.currency)
        .bind(decision.status().as_str())
        .bind(decision.reason())
        .bind(now_unix_ms)
        .fetch_optional(&mut *connection)
        .await?;
    if let Some(row) = inserted {
        return Ok(ChargeOutcome::Created(payment_from_row(&row)?));
    }
    let row = sqlx::query(BY_KEY)
        .bind(&charge.idempotency_key)
        .fetch_optional(&mut *connection)
        .await?;
    let existing = row.as_ref().map(payment_from_row).transpose()?;
    replayed(charge, existing)
}

/// What a charge whose key exists answers: the key's payment if it was
/// made for the same arguments.
fn replayed(charge: &Charge, existing: Option<Payment>) -> Result<ChargeOutcome, StoreError> {
    let payment = existing.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "no payment for idempotency key {} although inserting it conflicted",
            charge.idempotency_key
        ))
    })?;
    if payment.matches(charge) {
        Ok(ChargeOutcome::Existing(payment))
    } else {
        Err(StoreError::KeyReused {
            key: charge.idempotency_key.clone(),
        })
    }
}

/// The refund's write unit: one conditional write, then a read.
async fn refund_in(
    connection: &mut AnyConnection,
    payment_id: &str,
    now_unix_ms: i64,
) -> Result<Payment, StoreError> {
    sqlx::query(REFUND)
        .bind(PaymentStatus::Refunded.as_str())
        .bind(now_unix_ms)
        .bind(payment_id)
        .bind(PaymentStatus::Captured.as_str())
        .execute(&mut *connection)
        .await?;
    let row = sqlx::query(BY_ID)
        .bind(payment_id)
        .fetch_optional(&mut *connection)
        .await?;
    refunded(payment_id, row.as_ref().map(payment_from_row).transpose()?)
}

/// What a refund answers, from the payment as its write left it.
fn refunded(payment_id: &str, payment: Option<Payment>) -> Result<Payment, StoreError> {
    let payment = payment.ok_or_else(|| StoreError::NotFound {
        payment_id: payment_id.to_owned(),
    })?;
    match payment.status {
        PaymentStatus::Refunded => Ok(payment),
        PaymentStatus::Declined => Err(StoreError::Declined {
            payment_id: payment.payment_id,
        }),
        PaymentStatus::Captured => Err(StoreError::Corrupt(format!(
            "payment {payment_id} is still captured after refunding it"
        ))),
    }
}

/// The payment in `row`, or [`StoreError::NotFound`].
fn found(payment_id: &str, row: Option<AnyRow>) -> Result<Payment, StoreError> {
    let row = row.ok_or_else(|| StoreError::NotFound {
        payment_id: payment_id.to_owned(),
    })?;
    payment_from_row(&row)
}

fn payment_from_row(row: &AnyRow) -> Result<Payment, StoreError> {
    Payment::from_columns(
        row.try_get("payment_id")?,
        row.try_get("idempotency_key")?,
        row.try_get("user_id")?,
        row.try_get("amount_cents")?,
        row.try_get("currency")?,
        &row.try_get::<String, _>("status")?,
        row.try_get("decline_reason")?,
        row.try_get("created_at_unix_ms")?,
    )
}

impl Payment {
    /// A payment from its columns (`columns!()`'s order), its status checked.
    #[allow(clippy::too_many_arguments)]
    fn from_columns(
        payment_id: String,
        idempotency_key: String,
        user_id: String,
        amount_cents: i64,
        currency: String,
        status: &str,
        decline_reason: String,
        created_at_unix_ms: i64,
    ) -> Result<Self, StoreError> {
        Ok(Payment {
            payment_id,
            idempotency_key,
            user_id,
            amount_cents,
            currency,
            status: PaymentStatus::parse(status)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown payment status {status:?}")))?,
            decline_reason,
            created_at_unix_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::domain::{decide, new_payment_id};

    async fn open(dir: &std::path::Path) -> Store {
        let pool = mesh::storage::open("payments", None, dir, &crate::MIGRATOR)
            .await
            .expect("open the payments database");
        Store::new(pool).expect("start the payments writer")
    }

    fn charge(key: &str, amount: i64) -> Charge {
        Charge {
            idempotency_key: key.into(),
            user_id: "u_1".into(),
            amount_cents: amount,
            currency: "EUR".into(),
        }
    }

    #[tokio::test]
    async fn a_key_is_charged_once_and_replays_return_the_same_payment() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let first = store
            .charge(
                &new_payment_id(),
                &charge("k1", 500),
                &decide(500, 1000),
                10,
            )
            .await
            .unwrap();
        let ChargeOutcome::Created(created) = first else {
            panic!("first charge should create: {first:?}")
        };
        assert_eq!(created.status, PaymentStatus::Captured);
        assert_eq!(created.created_at_unix_ms, 10);
        let again = store
            .charge(
                &new_payment_id(),
                &charge("k1", 500),
                &decide(500, 1000),
                99,
            )
            .await
            .unwrap();
        assert_eq!(again, ChargeOutcome::Existing(created.clone()));
        assert_eq!(store.get(&created.payment_id).await.unwrap(), created);
    }

    #[tokio::test]
    async fn a_key_reused_with_other_arguments_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        store
            .charge(&new_payment_id(), &charge("k1", 500), &decide(500, 1000), 1)
            .await
            .unwrap();
        let error = store
            .charge(&new_payment_id(), &charge("k1", 501), &decide(501, 1000), 2)
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "idempotency_key k1 was already used with different arguments"
        );
        let mut other_currency = charge("k1", 500);
        other_currency.currency = "USD".into();
        assert!(matches!(
            store
                .charge(&new_payment_id(), &other_currency, &Decision::Capture, 3)
                .await,
            Err(StoreError::KeyReused { .. })
        ));
    }

    #[tokio::test]
    async fn refund_moves_captured_to_refunded_once_and_refuses_declined() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let captured = store
            .charge(&new_payment_id(), &charge("ok", 500), &decide(500, 1000), 1)
            .await
            .unwrap()
            .payment()
            .clone();
        let refunded = store.refund(&captured.payment_id, 2).await.unwrap();
        assert_eq!(refunded.status, PaymentStatus::Refunded);
        assert_eq!(
            store.refund(&captured.payment_id, 3).await.unwrap(),
            refunded
        );

        let declined = store
            .charge(
                &new_payment_id(),
                &charge("big", 5000),
                &decide(5000, 1000),
                4,
            )
            .await
            .unwrap()
            .payment()
            .clone();
        assert_eq!(declined.status, PaymentStatus::Declined);
        assert_eq!(
            declined.decline_reason,
            "amount 5000 exceeds the limit of 1000"
        );
        let error = store.refund(&declined.payment_id, 5).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "payment {} was declined; there is nothing to refund",
                declined.payment_id
            )
        );
        assert!(matches!(
            store.refund("pay_nope", 6).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.get("pay_nope").await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn concurrent_charges_from_two_pools_on_one_file_record_one_payment() {
        let dir = tempfile::tempdir().unwrap();
        let stores = [open(dir.path()).await, open(dir.path()).await];
        let attempts = (0..16).map(|attempt| {
            let store = stores[attempt % 2].clone();
            async move {
                store
                    .charge(
                        &new_payment_id(),
                        &charge("race", 700),
                        &Decision::Capture,
                        1,
                    )
                    .await
                    .unwrap()
            }
        });
        let outcomes = futures::future::join_all(attempts).await;
        let ids: HashSet<_> = outcomes
            .iter()
            .map(|outcome| outcome.payment().payment_id.clone())
            .collect();
        assert_eq!(ids.len(), 1, "{outcomes:?}");
        let created = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, ChargeOutcome::Created(_)))
            .count();
        assert_eq!(created, 1, "{outcomes:?}");
    }

    #[tokio::test]
    async fn payments_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = open(dir.path()).await;
            store
                .charge(&new_payment_id(), &charge("k", 1), &Decision::Capture, 1)
                .await
                .unwrap()
                .payment()
                .payment_id
                .clone()
        };
        let store = open(dir.path()).await;
        assert_eq!(store.get(&id).await.unwrap().amount_cents, 1);
    }
}
