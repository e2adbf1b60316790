//! Where a database's reads run: a SQLite file's on its reader threads
//! ([`SqliteReader`]), PostgreSQL's through the pool (docs/adr/0024-*).

use sqlx::AnyPool;

use super::{sqlite_file, SqliteReader, SqliteWriterError, StorageError};

/// Reader threads per SQLite database: two let a slow read (a long page)
/// hold one while the hot reads go on on the other; more would mostly
/// sleep on a two-core machine.
pub const SQLITE_READER_THREADS: usize = 2;

/// One database's reads; a store writes each read for the kind it is given
/// (a closure over a `rusqlite::Connection`, or a query on the pool).
#[derive(Debug, Clone)]
pub enum Reader {
    /// A SQLite file: reads run on its reader threads.
    Sqlite(SqliteReader),
    /// PostgreSQL: reads run on the pool.
    Pool(AnyPool),
}

impl Reader {
    /// The reads of `pool`'s database (`database` names its errors and
    /// threads). An in-memory SQLite database is refused, as its writer is:
    /// another connection would not see it.
    pub fn start(database: &str, pool: &AnyPool) -> Result<Self, StorageError> {
        if pool.connect_options().database_url.scheme() != "sqlite" {
            return Ok(Reader::Pool(pool.clone()));
        }
        let started = match sqlite_file(pool) {
            Some(path) => SqliteReader::start(database, &path, SQLITE_READER_THREADS),
            None => Err(SqliteWriterError::NotAFile {
                database: database.to_owned(),
            }),
        };
        started
            .map(Reader::Sqlite)
            .map_err(|source| StorageError::Reader {
                service: database.to_owned(),
                source: Box::new(source),
            })
    }
}
