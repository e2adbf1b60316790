//! Which writer a database gets: SQLite files get [`SqliteWriter`] (their
//! write units run whole on the database's own thread), PostgreSQL the
//! async [`GroupCommit`] writer on its pool (docs/adr/0023-*). An in-memory
//! SQLite database is refused: the writer's connection could not share it.

use std::path::PathBuf;

use sqlx::AnyPool;

use super::{GroupCommit, GroupCommitOptions, SqliteWriter, SqliteWriterError, StorageError};

/// One database's writer; a store writes each of its units for the kind it
/// is given (a closure over a `rusqlite::Connection`, or over sqlx's
/// connection).
#[derive(Debug, Clone)]
pub enum Writer {
    /// A SQLite file: units run on its writer thread.
    Sqlite(SqliteWriter),
    /// PostgreSQL: units run through the pool's async writer.
    Pool(GroupCommit),
}

impl Writer {
    /// The writer of `pool`'s database (`database` names its metrics and
    /// errors). Call inside a Tokio runtime.
    pub fn start(
        database: &str,
        pool: &AnyPool,
        options: GroupCommitOptions,
    ) -> Result<Self, StorageError> {
        if pool.connect_options().database_url.scheme() != "sqlite" {
            return Ok(Writer::Pool(GroupCommit::start(
                database,
                pool.clone(),
                options,
            )));
        }
        let started = match sqlite_file(pool) {
            Some(path) => SqliteWriter::start(database, &path, options),
            None => Err(SqliteWriterError::NotAFile {
                database: database.to_owned(),
            }),
        };
        started
            .map(Writer::Sqlite)
            .map_err(|source| StorageError::Writer {
                service: database.to_owned(),
                source: Box::new(source),
            })
    }
}

/// The file of `pool`'s database when it is SQLite on disk.
pub fn sqlite_file(pool: &AnyPool) -> Option<PathBuf> {
    let options = pool.connect_options();
    if options.database_url.scheme() != "sqlite" {
        return None;
    }
    let sqlite = sqlx::sqlite::SqliteConnectOptions::try_from(&*options).ok()?;
    let file = sqlite.get_filename();
    file.is_file().then(|| file.to_path_buf())
}

#[cfg(test)]
mod tests {
    use sqlx::migrate::Migrator;

    use super::*;

    #[tokio::test]
    async fn a_sqlite_file_gets_the_thread_writer_and_an_in_memory_database_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = crate::storage::open("choice_test", None, dir.path(), &Migrator::DEFAULT)
            .await
            .expect("open SQLite");
        assert_eq!(
            sqlite_file(&pool).as_deref(),
            Some(dir.path().join("choice_test.db").as_path())
        );
        let writer = Writer::start("choice_test", &pool, GroupCommitOptions::default());
        assert!(matches!(writer, Ok(Writer::Sqlite(_))), "{writer:?}");

        let memory = crate::storage::open(
            "choice_test",
            Some("sqlite::memory:"),
            dir.path(),
            &Migrator::DEFAULT,
        )
        .await
        .expect("open in memory");
        assert_eq!(sqlite_file(&memory), None);
        let refused = Writer::start("choice_test", &memory, GroupCommitOptions::default());
        match refused {
            Err(error) => assert!(error.to_string().contains("not a file"), "{error}"),
            Ok(writer) => panic!("an in-memory database got a writer: {writer:?}"),
        }
    }
}
