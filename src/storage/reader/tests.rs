//! The readers against a real SQLite file opened as the services open it,
//! written through the thread writer and the pool.

use std::sync::mpsc as std_mpsc;

use sqlx::{migrate::Migrator, AnyPool};

use super::*;
use crate::storage::{GroupCommitOptions, SqliteWriter, WriteError};

/// The tests' errors: SQL on a reader, or the reader's and writer's own.
#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

struct Database {
    dir: tempfile::TempDir,
    pool: AnyPool,
}

async fn database() -> Database {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = crate::storage::open("reader_test", None, dir.path(), &Migrator::DEFAULT)
        .await
        .expect("open SQLite");
    sqlx::query("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("create notes");
    Database { dir, pool }
}

impl Database {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("reader_test.db")
    }

    fn reader(&self, threads: usize) -> SqliteReader {
        SqliteReader::start("reader_test", &self.path(), threads).expect("start the readers")
    }

    async fn insert(&self, id: i64) {
        sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'x')")
            .bind(id)
            .execute(&self.pool)
            .await
            .expect("insert a note");
    }
}

fn count(reader: &SqliteReader) -> impl std::future::Future<Output = Result<i64, TestError>> {
    reader.read(|connection| {
        Ok(connection.query_row("SELECT count(*) FROM notes", [], |row| row.get(0))?)
    })
}

/// Holds a reader thread until the returned sender is used (or dropped).
fn hold(reader: &SqliteReader) -> (std_mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, held) = std_mpsc::channel::<()>();
    let (started, running) = std_mpsc::channel::<()>();
    let read = reader.read(move |_| {
        started.send(()).expect("the test waits");
        let _ = held.recv();
        Ok::<_, TestError>(())
    });
    let task = tokio::spawn(async move { read.await.expect("the held read") });
    running.recv().expect("the held read started");
    (release, task)
}

#[tokio::test]
async fn a_read_sees_every_write_answered_before_it_whichever_writer_made_it() {
    let db = database().await;
    let reader = db.reader(2);
    assert_eq!(count(&reader).await.expect("count"), 0);
    db.insert(1).await;
    assert_eq!(count(&reader).await.expect("count"), 1);
    let writer = SqliteWriter::start("reader_test", &db.path(), GroupCommitOptions::default())
        .expect("start the writer");
    writer
        .write(|connection| {
            connection.execute("INSERT INTO notes (id, body) VALUES (2, 'y')", [])?;
            Ok::<_, TestError>(())
        })
        .await
        .expect("write");
    assert_eq!(count(&reader).await.expect("count"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statements_of_one_read_see_one_snapshot() {
    let db = database().await;
    db.insert(1).await;
    let reader = db.reader(1);
    let (between, written) = (std_mpsc::channel::<()>(), std_mpsc::channel::<()>());
    let (reached, wait_for_write) = (between.0, written.1);
    let read = reader.read(move |connection| {
        let count = |c: &rusqlite::Connection| -> Result<i64, rusqlite::Error> {
            c.query_row("SELECT count(*) FROM notes", [], |row| row.get(0))
        };
        let first = count(connection)?;
        reached.send(()).expect("the test waits");
        wait_for_write.recv().expect("the test writes");
        Ok::<_, TestError>((first, count(connection)?))
    });
    let read = tokio::spawn(read);
    tokio::task::spawn_blocking(move || between.1.recv().expect("the read's first statement"))
        .await
        .expect("wait");
    db.insert(2).await;
    written.0.send(()).expect("the read waits");
    let (first, second) = read.await.expect("join").expect("read");
    assert_eq!((first, second), (1, 1), "one read, one snapshot");
    assert_eq!(
        count(&reader).await.expect("count"),
        2,
        "the next read sees it"
    );
}

#[tokio::test]
async fn a_read_cannot_write() {
    let db = database().await;
    let reader = db.reader(1);
    let refused = reader
        .read(|connection| {
            connection.execute("INSERT INTO notes (id, body) VALUES (9, 'z')", [])?;
            Ok::<_, TestError>(())
        })
        .await;
    assert!(
        matches!(refused, Err(TestError::Sqlite(_))),
        "a reader wrote: {refused:?}"
    );
    assert_eq!(count(&reader).await.expect("count"), 0);
}

#[tokio::test]
async fn a_panicking_read_is_answered_panicked_and_the_reader_goes_on() {
    let db = database().await;
    db.insert(1).await;
    let reader = db.reader(1);
    let panicked = reader
        .read(|connection| -> Result<(), TestError> {
            let _: i64 =
                connection.query_row("SELECT count(*) FROM notes", [], |row| row.get(0))?;
            panic!("a read that panics inside its transaction")
        })
        .await;
    match panicked {
        Err(TestError::Read(ReadError::Panicked { database })) => {
            assert_eq!(database, "reader_test")
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    // Its transaction is gone: the same thread sees a write made since.
    db.insert(2).await;
    assert_eq!(count(&reader).await.expect("count"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_busy_and_takes_reads_again_once_it_drains() {
    let db = database().await;
    let reader = db.reader(1);
    let (release, held) = hold(&reader);
    let queued: Vec<_> = (0..READ_QUEUE_CAPACITY).map(|_| count(&reader)).collect();
    match count(&reader).await {
        Err(TestError::Read(error @ ReadError::Busy { capacity, .. })) => {
            assert_eq!(capacity, READ_QUEUE_CAPACITY);
            assert!(error.is_transient());
            assert!(error.to_string().contains("try again"), "{error}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    release.send(()).expect("release");
    held.await.expect("held read");
    for read in queued {
        assert_eq!(read.await.expect("a queued read"), 0);
    }
    assert_eq!(count(&reader).await.expect("count"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_read_on_one_thread_does_not_hold_the_reads_behind_it() {
    let db = database().await;
    let reader = db.reader(2);
    let (release, held) = hold(&reader);
    assert_eq!(
        count(&reader).await.expect("answered by the other thread"),
        0
    );
    release.send(()).expect("release");
    held.await.expect("held read");
}
