//! What the tests of both writers share: the tables they write to, what
//! another connection reads back, and the writers' batch counts.

use sqlx::{AnyPool, Row};

use super::WriteError;

/// The errors of the test units: their own failure, SQL (through sqlx or
/// on SQLite's writer thread), or the writer's.
#[derive(Debug, thiserror::Error)]
pub(super) enum TestError {
    #[error("unit refused: {0}")]
    Refused(&'static str),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// `notes`, and `children` whose deferred foreign key to it fails at
/// COMMIT rather than at the statement (a batch that cannot commit).
pub(super) async fn create_test_tables(pool: &AnyPool) {
    sqlx::query("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(pool)
        .await
        .expect("create notes");
    sqlx::query(
        "CREATE TABLE children (id BIGINT PRIMARY KEY, parent BIGINT NOT NULL \
         REFERENCES notes (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    .execute(pool)
    .await
    .expect("create children");
}

/// The notes' ids, in order, as `pool` sees them.
pub(super) async fn note_ids(pool: &AnyPool) -> Vec<i64> {
    sqlx::query("SELECT id FROM notes ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("read notes")
        .iter()
        .map(|row| row.get::<i64, _>(0))
        .collect()
}

/// `(batches, units)` committed by `database`'s writers, from the metrics.
pub(super) fn batches_and_units(database: &str) -> (f64, f64) {
    let text = crate::telemetry::metrics::encode_text();
    let value = |series: &str| {
        let prefix = format!("{series}{{database=\"{database}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|value| value.trim().parse::<f64>().expect("a number"))
            .unwrap_or(0.0)
    };
    (
        value("mesh_storage_write_batch_size_count"),
        value("mesh_storage_write_batch_size_sum"),
    )
}
