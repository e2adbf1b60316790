//! What every connection is set to before a service uses it, so that a
//! commit is on disk when it returns: no service acknowledges, or acts on, a
//! write it has not made durable (hardening finding 6).
//!
//! - **SQLite** (WAL mode): `synchronous = FULL` syncs the WAL at every
//!   commit. NORMAL, the usual WAL pairing, syncs only at checkpoints: a
//!   process crash loses nothing, but an OS crash or power cut can lose the
//!   last commits — acknowledged payments, saga steps persisted "before the
//!   remote call". The setting is per connection, so it is applied to each.
//! - **PostgreSQL**: `synchronous_commit = off` (a database, role or server
//!   default) acknowledges before the WAL is flushed. A connection that
//!   starts with `off` is switched to `on`; stricter values (`remote_write`,
//!   `on`, `remote_apply`) and `local` (flushed locally, standbys not
//!   awaited) are kept. A server running with `fsync = off` cannot be made
//!   durable from a session: the pool logs a warning at open.

use sqlx::{AnyConnection, AnyPool, Executor as _};

/// Run on every new SQLite connection: WAL (instances sharing the file read
/// while one writes), writers queue for up to 10 s instead of failing, each
/// commit synced, foreign keys enforced.
pub(super) const SQLITE_CONNECTION_SETTINGS: &str = "PRAGMA journal_mode = WAL; \
     PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// Makes a new connection commit durably (see the module doc).
pub(super) async fn configure(
    connection: &mut AnyConnection,
    is_sqlite: bool,
) -> Result<(), sqlx::Error> {
    if is_sqlite {
        connection.execute(SQLITE_CONNECTION_SETTINGS).await?;
        return Ok(());
    }
    let synchronous_commit: String =
        sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(&mut *connection)
            .await?;
    if synchronous_commit == "off" {
        connection.execute("SET synchronous_commit = on").await?;
    }
    Ok(())
}

/// Warns when a PostgreSQL server itself does not flush (`fsync = off`):
/// nothing a session sets makes its commits durable.
pub(super) async fn warn_if_the_server_does_not_sync(service: &str, pool: &AnyPool) {
    let fsync: Result<String, _> = sqlx::query_scalar("SELECT current_setting('fsync')")
        .fetch_one(pool)
        .await;
    match fsync {
        Ok(value) if value == "off" => tracing::warn!(
            service,
            "the PostgreSQL server runs with fsync = off: its commits are not durable, \
             whatever this service asks (a crash of that machine can lose acknowledged writes)"
        ),
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "could not read the server's fsync setting"),
    }
}
