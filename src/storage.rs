//! Each service's own database: SQLite in `--data-dir` by default (several local
//! instances of one service share the file in WAL mode), or PostgreSQL (or any
//! sqlx "any" URL) from `DATABASE_URL`. Queries use `$1`-style placeholders,
//! which both drivers accept, and portable SQL (TEXT, BIGINT).
//!
//! - [`open`]: the pool, every connection set up so that a commit is durable
//!   when it returns ([`durability`]'s module doc says how, per database);
//! - [`GroupCommit`]: one writer task per database that commits the write
//!   units of concurrent requests together, so that they share one durable
//!   flush; [`SqliteWriter`] does the same on a SQLite file's own thread,
//!   and [`Writer`] picks the one a database gets;
//! - [`SqliteReader`]: a SQLite file's hot reads on threads that own their
//!   connections, and [`Reader`], which picks it or the pool.

mod durability;
mod group_commit;
mod numbered_args;
mod reader;
mod reader_choice;
mod writer_choice;

use std::{path::Path, sync::Once, time::Duration};

use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
    AnyPool,
};

pub use group_commit::{
    GroupCommit, GroupCommitOptions, SqliteWriter, SqliteWriterError, WriteError,
};
pub use numbered_args::NumberedArgs;
pub use reader::{ReadError, SqliteReader, READ_QUEUE_CAPACITY};
pub use reader_choice::{Reader, SQLITE_READER_THREADS};
pub use writer_choice::{sqlite_file, Writer};

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data folder could not be created.
    #[error("cannot create the data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The database URL is malformed or names an unsupported driver.
    #[error("invalid database URL for {service} (expected postgres://… or sqlite://…): {source}")]
    Url {
        /// The service.
        service: String,
        /// The cause.
        source: sqlx::Error,
    },
    /// Connecting failed.
    #[error("cannot connect to the {service} database: {source}")]
    Connect {
        /// The service.
        service: String,
        /// The cause.
        source: sqlx::Error,
    },
    /// The database's writer could not start.
    #[error("cannot start the {service} database's writer: {source}")]
    Writer {
        /// The service.
        service: String,
        /// The cause.
        source: Box<SqliteWriterError>,
    },
    /// The database's reader threads could not start.
    #[error("cannot start the {service} database's readers: {source}")]
    Reader {
        /// The service.
        service: String,
        /// The cause.
        source: Box<SqliteWriterError>,
    },
    /// A migration failed.
    #[error("migrating the {service} database failed: {source}")]
    Migrate {
        /// The service.
        service: String,
        /// The cause.
        source: sqlx::migrate::MigrateError,
    },
}

static DRIVERS: Once = Once::new();

/// The URL of `service`'s database: `database_url` when given, else the SQLite
/// file `<data_dir>/<service>.db` (created if missing).
pub fn database_url(service: &str, database_url: Option<&str>, data_dir: &Path) -> String {
    match database_url {
        Some(url) => url.to_owned(),
        None => format!(
            "sqlite://{}?mode=rwc",
            data_dir.join(format!("{service}.db")).display()
        ),
    }
}

/// Opens `service`'s database and applies `migrator`'s migrations. Every
/// connection of the pool commits durably: SQLite in WAL mode with
/// `synchronous = FULL`, PostgreSQL with `synchronous_commit` at least `on`
/// (or `local`).
pub async fn open(
    service: &str,
    database_url_override: Option<&str>,
    data_dir: &Path,
    migrator: &Migrator,
) -> Result<AnyPool, StorageError> {
    DRIVERS.call_once(sqlx::any::install_default_drivers);
    if database_url_override.is_none() {
        std::fs::create_dir_all(data_dir).map_err(|source| StorageError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
    }
    let url = database_url(service, database_url_override, data_dir);
    let options: AnyConnectOptions = url.parse().map_err(|source| StorageError::Url {
        service: service.to_owned(),
        source,
    })?;
    let is_sqlite = url.starts_with("sqlite:");
    let pool = AnyPoolOptions::new()
        .max_connections(if is_sqlite { 4 } else { 10 })
        // A SQLite connection is a file on this machine served by its own
        // thread: pinging it before every use is one more cross-thread round
        // trip per query, and it cannot have been dropped by a server (the
        // pool still pings it when it is returned). A PostgreSQL connection
        // can die while idle: it is tested before use.
        .test_before_acquire(!is_sqlite)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |connection, _| Box::pin(durability::configure(connection, is_sqlite)))
        .connect_with(options)
        .await
        .map_err(|source| StorageError::Connect {
            service: service.to_owned(),
            source,
        })?;
    if !is_sqlite {
        durability::warn_if_the_server_does_not_sync(service, &pool).await;
    }
    migrate(service, &pool, migrator).await?;
    Ok(pool)
}

/// Applies migrations. Instances of one service that start together race to
/// migrate a shared SQLite file (which has no migration lock); the loser sees
/// an error, waits, and finds the work done on its next attempt.
async fn migrate(service: &str, pool: &AnyPool, migrator: &Migrator) -> Result<(), StorageError> {
    let mut attempt = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(source) if attempt >= 5 => {
                return Err(StorageError::Migrate {
                    service: service.to_owned(),
                    source,
                })
            }
            Err(error) => {
                tracing::debug!(%error, attempt, "migration raced another instance; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
        }
    }
}

/// Whether `error` is a unique-constraint violation (a duplicate key).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database_error| database_error.is_unique_violation())
}

/// Whether `error` is worth a retry (the service answers UNAVAILABLE): pool
/// exhaustion, lost connections, SQLite busy/locked (5, 6, 517), PostgreSQL
/// serialization failures, deadlocks, shutdowns and connection errors
/// (40001, 40P01, 57P01, class 08).
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(database_error) => database_error.code().is_some_and(|code| {
            matches!(
                code.as_ref(),
                "5" | "6" | "517" | "40001" | "40P01" | "57P01"
            ) || code.starts_with("08")
        }),
        _ => false,
    }
}

/// Whether an error of a SQLite connection on a writer's or reader's own
/// thread is worth a retry: busy or locked (another process's writer, or a
/// checkpoint, held the file past the busy timeout).
pub fn is_sqlite_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Milliseconds since the Unix epoch, for `*_unix_ms` columns.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_errors_are_transient_others_are_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }

    #[tokio::test]
    async fn a_locked_sqlite_database_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        sqlx::any::install_default_drivers();
        let holder = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let waiter = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x BIGINT)")
            .execute(&holder)
            .await
            .unwrap();
        let mut lock = holder.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *lock)
            .await
            .unwrap();
        // No busy_timeout on this pool: the second writer fails at once.
        let error = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&waiter)
            .await
            .unwrap_err();
        assert!(is_transient(&error), "{error:?}");
        assert!(!is_unique_violation(&error));
    }

    #[test]
    fn the_default_database_is_a_sqlite_file_in_the_data_dir() {
        let url = database_url("users", None, Path::new("/var/lib/mesh"));
        assert_eq!(url, "sqlite:///var/lib/mesh/users.db?mode=rwc");
        assert_eq!(
            database_url("users", Some("postgres://x/users"), Path::new("/d")),
            "postgres://x/users"
        );
    }
}
