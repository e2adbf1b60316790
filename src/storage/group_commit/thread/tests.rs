//! The thread writer against real SQLite files opened as the services open
//! them. A batch's make-up is fixed by a gate: a first unit that holds the
//! writer's thread until the units under test are queued, which then form
//! the next batch together.

use std::{path::PathBuf, sync::mpsc as std_mpsc};

use sqlx::{migrate::Migrator, AnyPool};

use super::*;
use crate::storage::group_commit::test_tables::{batches_and_units, note_ids, TestError};

struct Database {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// A sqlx pool on the same file: what the service's reads see.
    observer: AnyPool,
}

async fn database() -> Database {
    let dir = tempfile::tempdir().expect("temp dir");
    let observer = crate::storage::open("thread_test", None, dir.path(), &Migrator::DEFAULT)
        .await
        .expect("open SQLite");
    crate::storage::group_commit::test_tables::create_test_tables(&observer).await;
    Database {
        path: dir.path().join("thread_test.db"),
        _dir: dir,
        observer,
    }
}

fn writer(db: &Database, options: GroupCommitOptions) -> SqliteWriter {
    SqliteWriter::start("thread_test", &db.path, options).expect("start the writer")
}

fn insert_note(
    writer: &SqliteWriter,
    id: i64,
) -> impl std::future::Future<Output = Result<usize, TestError>> {
    writer.write(move |connection| {
        Ok(connection.execute("INSERT INTO notes (id, body) VALUES (?1, 'x')", [id])?)
    })
}

/// A unit that writes a note and then fails: its note must not survive.
fn failing_unit(
    writer: &SqliteWriter,
    id: i64,
) -> impl std::future::Future<Output = Result<usize, TestError>> {
    writer.write(move |connection| {
        connection.execute("INSERT INTO notes (id, body) VALUES (?1, 'doomed')", [id])?;
        Err(TestError::Refused("after its insert"))
    })
}

/// Holds the writer's thread, once it returns, until the returned sender is
/// used (or dropped): the queue is empty then, and what is queued next forms
/// the next batch.
fn gate(writer: &SqliteWriter) -> (std_mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (open, opened) = std_mpsc::channel::<()>();
    let (started, running) = std_mpsc::channel::<()>();
    let held = writer.write(move |_connection| {
        let _ = started.send(());
        let _ = opened.recv();
        Ok::<_, TestError>(())
    });
    let held = tokio::spawn(async move { held.await.expect("the gate unit") });
    running
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer's thread runs the gate");
    (open, held)
}

#[tokio::test]
async fn units_commit_and_another_connection_sees_them() {
    let db = database().await;
    let writer = writer(&db, GroupCommitOptions::default());
    let answers = futures::future::join_all((1..=5).map(|id| insert_note(&writer, id))).await;
    assert!(
        answers.iter().all(|answer| matches!(answer, Ok(1))),
        "{answers:?}"
    );
    assert_eq!(note_ids(&db.observer).await, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn failing_units_at_a_batchs_start_middle_and_end_are_rolled_back_alone() {
    let db = database().await;
    let writer = writer(&db, GroupCommitOptions::default());
    let (open, gated) = gate(&writer);
    let units: Vec<futures::future::BoxFuture<'static, Result<usize, TestError>>> = vec![
        Box::pin(failing_unit(&writer, 1)),
        Box::pin(insert_note(&writer, 2)),
        Box::pin(failing_unit(&writer, 3)),
        Box::pin(insert_note(&writer, 4)),
        Box::pin(failing_unit(&writer, 5)),
    ];
    open.send(()).expect("the gate is waiting");
    gated.await.expect("the gate");
    let answers = futures::future::join_all(units).await;
    for (at, answer) in answers.iter().enumerate() {
        if at % 2 == 0 {
            assert!(
                matches!(answer, Err(TestError::Refused(_))),
                "{at}: {answer:?}"
            );
        } else {
            assert!(matches!(answer, Ok(1)), "{at}: {answer:?}");
        }
    }
    assert_eq!(note_ids(&db.observer).await, vec![2, 4]);
}

#[tokio::test]
async fn a_lone_failing_unit_leaves_nothing_and_the_next_unit_commits() {
    let db = database().await;
    let writer = writer(&db, GroupCommitOptions::default());
    assert!(matches!(
        failing_unit(&writer, 1).await,
        Err(TestError::Refused(_))
    ));
    assert_eq!(insert_note(&writer, 2).await.expect("next unit"), 1);
    assert_eq!(note_ids(&db.observer).await, vec![2]);
}

#[tokio::test]
async fn a_panicking_unit_is_answered_panicked_and_its_batch_commits_the_rest() {
    let db = database().await;
    let writer = writer(&db, GroupCommitOptions::default());
    let (open, gated) = gate(&writer);
    let before = insert_note(&writer, 1);
    let panicking = writer.write(|connection| -> Result<(), TestError> {
        connection.execute("INSERT INTO notes (id, body) VALUES (2, 'doomed')", [])?;
        if connection.is_autocommit() {
            return Err(TestError::Refused("outside a transaction"));
        }
        panic!("a unit's bug");
    });
    let after = insert_note(&writer, 3);
    open.send(()).expect("the gate is waiting");
    gated.await.expect("the gate");
    let (before, panicking, after) = tokio::join!(before, panicking, after);
    assert!(matches!(before, Ok(1)), "{before:?}");
    assert!(
        matches!(
            panicking,
            Err(TestError::Write(WriteError::Panicked { .. }))
        ),
        "{panicking:?}"
    );
    assert!(matches!(after, Ok(1)), "{after:?}");
    assert_eq!(note_ids(&db.observer).await, vec![1, 3]);
    // Alone in its batch, too; and the thread goes on.
    let alone = writer.write(|_connection| -> Result<(), TestError> { panic!("again") });
    assert!(matches!(
        alone.await,
        Err(TestError::Write(WriteError::Panicked { .. }))
    ));
    assert_eq!(insert_note(&writer, 4).await.expect("after the panics"), 1);
}

#[tokio::test]
async fn a_batch_that_cannot_commit_answers_every_unit_with_the_error_and_keeps_nothing() {
    let db = database().await;
    let writer = writer(&db, GroupCommitOptions::default());
    let (open, gated) = gate(&writer);
    let note = insert_note(&writer, 1);
    // A child whose parent never exists: the deferred key fails at COMMIT.
    let orphan = writer.write(|connection| {
        Ok::<_, TestError>(
            connection.execute("INSERT INTO children (id, parent) VALUES (1, 999)", [])?,
        )
    });
    open.send(()).expect("the gate is waiting");
    gated.await.expect("the gate");
    let (note, orphan) = tokio::join!(note, orphan);
    for answer in [note, orphan] {
        match answer {
            Err(TestError::Write(WriteError::Batch {
                units, transient, ..
            })) => {
                assert_eq!(units, 2);
                assert!(!transient, "a constraint is not worth a retry");
            }
            other => panic!("expected the batch's error, got {other:?}"),
        }
    }
    assert!(note_ids(&db.observer).await.is_empty(), "nothing committed");
    assert_eq!(insert_note(&writer, 2).await.expect("next batch"), 1);
    assert_eq!(note_ids(&db.observer).await, vec![2]);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_the_queued_units_still_commit() {
    let db = database().await;
    let writer = writer(
        &db,
        GroupCommitOptions {
            queue_capacity: 1,
            ..GroupCommitOptions::default()
        },
    );
    let (open, gated) = gate(&writer);
    let queued = insert_note(&writer, 1);
    let refused = insert_note(&writer, 2).await;
    assert!(
        matches!(
            refused,
            Err(TestError::Write(WriteError::QueueFull { capacity: 1, .. }))
        ),
        "{refused:?}"
    );
    open.send(()).expect("the gate is waiting");
    gated.await.expect("the gate");
    assert!(matches!(queued.await, Ok(1)));
    assert_eq!(note_ids(&db.observer).await, vec![1]);
}

#[tokio::test]
async fn a_missing_file_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nothing-here.db");
    match SqliteWriter::start("thread_test", &missing, GroupCommitOptions::default()) {
        Err(SqliteWriterError::Open { path, .. }) => assert!(path.ends_with("nothing-here.db")),
        other => panic!("expected an open error, got {other:?}"),
    }
    assert!(!missing.exists(), "the writer creates no database");
}

#[test]
fn busy_and_locked_are_worth_a_retry_and_a_constraint_is_not() {
    let failure = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
    assert!(crate::storage::is_sqlite_busy(&failure(5)));
    assert!(crate::storage::is_sqlite_busy(&failure(6)));
    assert!(crate::storage::is_sqlite_busy(&failure(517)));
    assert!(!crate::storage::is_sqlite_busy(&failure(19)));
    assert!(!crate::storage::is_sqlite_busy(
        &rusqlite::Error::QueryReturnedNoRows
    ));
}

#[tokio::test]
async fn units_run_in_the_order_write_was_called_in_batches_of_at_most_the_bound() {
    let db = database().await;
    let writer = SqliteWriter::start(
        "thread_bounded_test",
        &db.path,
        GroupCommitOptions {
            max_batch: 8,
            ..GroupCommitOptions::default()
        },
    )
    .expect("start the writer");
    let (open, gated) = gate(&writer);
    // Each unit inserts its note and counts the notes it sees.
    let units: Vec<_> = (1..=20)
        .map(|id| {
            writer.write(move |connection| {
                connection.execute("INSERT INTO notes (id, body) VALUES (?1, 'x')", [id])?;
                Ok::<i64, TestError>(connection.query_row(
                    "SELECT COUNT(*) FROM notes",
                    [],
                    |row| row.get(0),
                )?)
            })
        })
        .collect();
    open.send(()).expect("the gate is waiting");
    gated.await.expect("the gate");
    let seen: Vec<i64> = futures::future::join_all(units)
        .await
        .into_iter()
        .map(|answer| answer.expect("every unit commits"))
        .collect();
    assert_eq!(seen, (1..=20).collect::<Vec<i64>>(), "unit n saw n notes");
    // The gate alone, then 8 + 8 + 4.
    assert_eq!(batches_and_units("thread_bounded_test"), (4.0, 21.0));
}

#[tokio::test]
async fn units_queued_before_the_last_handle_is_dropped_are_still_committed() {
    let db = database().await;
    let writer = writer(&db, GroupCommitOptions::default());
    let (open, gated) = gate(&writer);
    let units: Vec<_> = (1..=3).map(|id| insert_note(&writer, id)).collect();
    drop(writer);
    open.send(()).expect("the gate is waiting");
    gated.await.expect("the gate");
    for answer in futures::future::join_all(units).await {
        assert!(matches!(answer, Ok(1)), "{answer:?}");
    }
    assert_eq!(note_ids(&db.observer).await, vec![1, 2, 3]);
}
