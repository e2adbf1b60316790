//! Hardening finding 6 (durability): every service opened its SQLite database
//! with `synchronous = NORMAL`, which in WAL mode may lose commits that were
//! already acknowledged when the machine (not just the process) crashes, and
//! took whatever `synchronous_commit` a PostgreSQL database or role was
//! configured with (`off` acknowledges before the WAL is flushed). No service
//! may acknowledge, or act on, a write it has not made durable.
//!
//! These tests open databases exactly as the services do
//! (`mesh::storage::open`) and ask every pooled connection — the setting is
//! per connection in both databases — what it will do at COMMIT.

use std::{path::Path, time::Duration};

use sqlx::{migrate::Migrator, pool::PoolConnection, Any, AnyPool, Row};
use testkit::Postgres;

/// More connections than any pool `open` makes, acquired at once, so that
/// every connection of the pool is asked (not only a reused first one).
const CONNECTIONS_TO_HOLD: usize = 4;

async fn one_table_migrator(dir: &Path) -> Migrator {
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations).expect("migrations folder");
    std::fs::write(
        migrations.join("0001_notes.sql"),
        "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL);",
    )
    .expect("write the migration");
    Migrator::new(migrations).await.expect("read the migration")
}

/// Holds `count` connections of `pool` at the same time and returns them.
async fn hold_connections(pool: &AnyPool, count: usize) -> Vec<PoolConnection<Any>> {
    let mut held = Vec::new();
    for _ in 0..count {
        held.push(
            tokio::time::timeout(Duration::from_secs(30), pool.acquire())
                .await
                .expect("a pooled connection within 30 s")
                .expect("acquire a pooled connection"),
        );
    }
    held
}

/// Hardening finding 6: a SQLite commit must be on disk when it is
/// acknowledged. In WAL mode that takes `synchronous = FULL` (2) on every
/// connection (NORMAL, 1, syncs the WAL only at checkpoints).
#[tokio::test]
async fn every_pooled_sqlite_connection_syncs_the_wal_at_each_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let migrator = one_table_migrator(dir.path()).await;
    let data = dir.path().join("data");
    let pool = mesh::storage::open("notes", None, &data, &migrator)
        .await
        .expect("open the SQLite database as a service does");
    let size = pool.options().get_max_connections() as usize;
    let mut held = hold_connections(&pool, size.min(CONNECTIONS_TO_HOLD)).await;
    assert!(held.len() >= 2, "a pool of one connection proves little");
    let mut settings = Vec::new();
    for connection in &mut held {
        let journal: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut **connection)
            .await
            .expect("PRAGMA journal_mode")
            .try_get(0)
            .expect("journal mode text");
        let synchronous: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut **connection)
            .await
            .expect("PRAGMA synchronous")
            .try_get(0)
            .expect("synchronous level");
        settings.push((journal.to_lowercase(), synchronous));
    }
    assert!(
        settings
            .iter()
            .all(|(journal, synchronous)| journal == "wal" && *synchronous == 2),
        "every connection must be (journal_mode wal, synchronous 2 = FULL); got {settings:?}"
    );
}

/// Hardening finding 6: a PostgreSQL database (or role) configured with
/// `synchronous_commit = off` must not make a service acknowledge commits
/// that are not yet flushed: every connection the service opens commits
/// synchronously.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgresql_connection_commits_synchronously_whatever_the_database_default() {
    let postgres = Postgres::start();
    let url = postgres.create_database("notes");
    let altered = postgres.psql(
        "postgres",
        "ALTER DATABASE notes SET synchronous_commit = off",
    );
    assert!(
        altered.status.success(),
        "ALTER DATABASE: {}",
        String::from_utf8_lossy(&altered.stderr)
    );
    let check = postgres.psql("notes", "SHOW synchronous_commit");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "off",
        "the database default the service must override"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let migrator = one_table_migrator(dir.path()).await;
    let pool = mesh::storage::open("notes", Some(&url), dir.path(), &migrator)
        .await
        .expect("open the PostgreSQL database as a service does");
    let mut held = hold_connections(&pool, CONNECTIONS_TO_HOLD).await;
    let mut settings = Vec::new();
    for connection in &mut held {
        let value: String = sqlx::query("SELECT current_setting('synchronous_commit')")
            .fetch_one(&mut **connection)
            .await
            .expect("read synchronous_commit")
            .try_get(0)
            .expect("setting text");
        settings.push(value);
    }
    assert!(
        settings.iter().all(|value| value == "on"),
        "every connection must commit with synchronous_commit = on; got {settings:?}"
    );
}
