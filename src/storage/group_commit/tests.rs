//! The writer against real SQLite files opened as the services open them.
//! Tests that must see one batch run on the current-thread runtime: the
//! writer cannot start before the test awaits, so every unit queued before
//! that is waiting when the first batch is collected.

use std::time::Duration;

use futures::future::join_all;
use sqlx::{migrate::Migrator, AnyPool};

use super::{
    test_tables::{batches_and_units, note_ids, TestError},
    *,
};

struct Database {
    _dir: tempfile::TempDir,
    pool: AnyPool,
    /// A second pool on the same file: what another instance would see.
    observer: AnyPool,
}

async fn database() -> Database {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = crate::storage::open("writer_test", None, dir.path(), &Migrator::DEFAULT)
        .await
        .expect("open SQLite");
    super::test_tables::create_test_tables(&pool).await;
    let observer = crate::storage::open("writer_test", None, dir.path(), &Migrator::DEFAULT)
        .await
        .expect("open SQLite again");
    Database {
        _dir: dir,
        pool,
        observer,
    }
}

fn writer(name: &str, pool: &AnyPool) -> GroupCommit {
    GroupCommit::start(name, pool.clone(), GroupCommitOptions::default())
}

/// Inserts note `id` and answers how many notes the unit saw after its insert.
fn insert_note(
    writer: &GroupCommit,
    id: i64,
) -> impl Future<Output = Result<i64, TestError>> + Send + 'static {
    writer.write(move |connection| {
        Box::pin(async move {
            sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'note')")
                .bind(id)
                .execute(&mut *connection)
                .await?;
            let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notes")
                .fetch_one(&mut *connection)
                .await?;
            Ok(seen)
        })
    })
}

/// Inserts a child of the missing note 99: valid until COMMIT checks the
/// deferred foreign key, so the batch that holds it cannot commit.
fn insert_orphan(
    writer: &GroupCommit,
) -> impl Future<Output = Result<(), TestError>> + Send + 'static {
    writer.write(|connection| {
        Box::pin(async move {
            sqlx::query("INSERT INTO children (id, parent) VALUES (1, 99)")
                .execute(&mut *connection)
                .await?;
            Ok(())
        })
    })
}

#[tokio::test]
async fn units_run_in_the_order_write_was_called_and_share_one_commit() {
    let db = database().await;
    let writer = writer("order_test", &db.pool);
    let writes: Vec<_> = (1..=40).map(|id| insert_note(&writer, id)).collect();
    let seen: Vec<i64> = join_all(writes)
        .await
        .into_iter()
        .map(|answer| answer.expect("every unit commits"))
        .collect();
    // Unit n saw the n - 1 notes of the units queued before it, and its own.
    assert_eq!(seen, (1..=40).collect::<Vec<_>>());
    assert_eq!(note_ids(&db.observer).await, (1..=40).collect::<Vec<_>>());
    let (batches, units) = batches_and_units("order_test");
    assert_eq!(units, 40.0);
    assert_eq!(
        batches, 1.0,
        "40 units queued together, at most 64 per batch"
    );
}

#[tokio::test]
async fn a_batch_never_exceeds_its_bounded_size() {
    let db = database().await;
    let options = GroupCommitOptions {
        max_batch: 8,
        ..GroupCommitOptions::default()
    };
    let writer = GroupCommit::start("bounded_test", db.pool.clone(), options);
    let writes: Vec<_> = (1..=20).map(|id| insert_note(&writer, id)).collect();
    for answer in join_all(writes).await {
        answer.expect("commits");
    }
    assert_eq!(batches_and_units("bounded_test"), (3.0, 20.0), "8 + 8 + 4");
}

#[tokio::test]
async fn a_failing_unit_is_rolled_back_alone_and_answered_with_its_own_error() {
    let db = database().await;
    let writer = writer("isolation_test", &db.pool);
    let first = insert_note(&writer, 1);
    // Writes a note, then fails: its note must not survive.
    let failing = writer.write(|connection| {
        Box::pin(async move {
            sqlx::query("INSERT INTO notes (id, body) VALUES (2, 'half done')")
                .execute(&mut *connection)
                .await?;
            Err::<(), _>(TestError::Refused("changed its mind"))
        })
    });
    // Fails inside SQLite: a duplicate of note 1.
    let duplicate = insert_note(&writer, 1);
    let last = insert_note(&writer, 3);
    let (first, failing, duplicate, last) = tokio::join!(first, failing, duplicate, last);
    assert_eq!(first.expect("first commits"), 1);
    assert!(
        matches!(failing, Err(TestError::Refused("changed its mind"))),
        "{failing:?}"
    );
    match duplicate {
        Err(TestError::Sql(error)) => assert!(crate::storage::is_unique_violation(&error)),
        other => panic!("expected the unique violation, got {other:?}"),
    }
    assert_eq!(last.expect("last commits"), 2, "it saw notes 1 and 3 only");
    assert_eq!(note_ids(&db.observer).await, vec![1, 3]);
    assert_eq!(batches_and_units("isolation_test"), (1.0, 4.0));
}

/// A unit that writes, then fails.
fn write_then_fail(
    writer: &GroupCommit,
    id: i64,
) -> impl Future<Output = Result<(), TestError>> + Send + 'static {
    writer.write(move |connection| {
        Box::pin(async move {
            sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'half done')")
                .bind(id)
                .execute(&mut *connection)
                .await?;
            Err::<(), _>(TestError::Refused("changed its mind"))
        })
    })
}

/// The boundaries between units (a savepoint opened with the previous
/// unit's end, the last unit's release left to the COMMIT) hold whichever
/// units fail: the first, two in a row, the last.
#[tokio::test]
async fn failing_units_at_a_batchs_start_middle_and_end_are_rolled_back_alone() {
    let db = database().await;
    let writer = writer("boundaries_test", &db.pool);
    let answers = tokio::join!(
        write_then_fail(&writer, 10),
        insert_note(&writer, 1),
        write_then_fail(&writer, 11),
        write_then_fail(&writer, 12),
        insert_note(&writer, 2),
        write_then_fail(&writer, 13),
    );
    for failed in [answers.0, answers.2, answers.3, answers.5] {
        assert!(matches!(failed, Err(TestError::Refused(_))), "{failed:?}");
    }
    assert_eq!(answers.1.expect("note 1 commits"), 1);
    assert_eq!(answers.4.expect("note 2 commits"), 2, "it saw note 1 only");
    assert_eq!(note_ids(&db.observer).await, vec![1, 2]);
    assert_eq!(batches_and_units("boundaries_test"), (1.0, 6.0));
    // The next batch starts clean, its last unit succeeding.
    let (third, fourth) = tokio::join!(insert_note(&writer, 3), insert_note(&writer, 4));
    third.expect("note 3 commits");
    assert_eq!(fourth.expect("note 4 commits"), 4);
    assert_eq!(note_ids(&db.observer).await, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn a_batch_that_cannot_commit_answers_every_unit_with_the_error_and_keeps_nothing() {
    let db = database().await;
    let writer = writer("commit_failure_test", &db.pool);
    let note = insert_note(&writer, 1);
    let orphan = insert_orphan(&writer);
    let (note, orphan) = tokio::join!(note, orphan);
    for answer in [note.map(|_| ()), orphan] {
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
    // The writer goes on with the next batch.
    assert_eq!(insert_note(&writer, 2).await.expect("next batch"), 1);
    assert_eq!(note_ids(&db.observer).await, vec![2]);
}

#[tokio::test]
async fn a_panicking_unit_is_rolled_back_and_the_writer_goes_on() {
    let db = database().await;
    let writer = writer("panic_test", &db.pool);
    let first = insert_note(&writer, 1);
    let panicking = writer.write(|connection| {
        Box::pin(async move {
            sqlx::query("INSERT INTO notes (id, body) VALUES (2, 'then panics')")
                .execute(&mut *connection)
                .await?;
            if connection.backend_name() == "SQLite" {
                panic!("a bug in a write unit");
            }
            Ok::<_, TestError>(0)
        })
    });
    let last = insert_note(&writer, 3);
    let (first, panicking, last) = tokio::join!(first, panicking, last);
    first.expect("first commits");
    last.expect("last commits");
    assert!(
        matches!(
            panicking,
            Err(TestError::Write(WriteError::Panicked { .. }))
        ),
        "{panicking:?}"
    );
    assert_eq!(note_ids(&db.observer).await, vec![1, 3]);
    assert_eq!(insert_note(&writer, 4).await.expect("still writing"), 3);
}

/// A unit alone in its batch runs without a savepoint (the transaction is
/// its own): when it fails or panics, the transaction is rolled back, so
/// nothing it wrote survives, and the writer goes on.
#[tokio::test]
async fn a_lone_unit_that_fails_or_panics_leaves_nothing_behind() {
    let db = database().await;
    let writer = writer("lone_failure_test", &db.pool);
    assert_eq!(insert_note(&writer, 1).await.expect("commits"), 1);
    let failing = writer
        .write(|connection| {
            Box::pin(async move {
                sqlx::query("INSERT INTO notes (id, body) VALUES (2, 'half done')")
                    .execute(&mut *connection)
                    .await?;
                Err::<(), _>(TestError::Refused("changed its mind"))
            })
        })
        .await;
    assert!(
        matches!(failing, Err(TestError::Refused("changed its mind"))),
        "{failing:?}"
    );
    let panicking = writer
        .write(|connection| {
            Box::pin(async move {
                sqlx::query("INSERT INTO notes (id, body) VALUES (3, 'then panics')")
                    .execute(&mut *connection)
                    .await?;
                if connection.backend_name() == "SQLite" {
                    panic!("a bug in a write unit");
                }
                Ok::<_, TestError>(())
            })
        })
        .await;
    assert!(
        matches!(
            panicking,
            Err(TestError::Write(WriteError::Panicked { .. }))
        ),
        "{panicking:?}"
    );
    assert_eq!(note_ids(&db.observer).await, vec![1]);
    assert_eq!(insert_note(&writer, 4).await.expect("still writing"), 2);
    assert_eq!(note_ids(&db.observer).await, vec![1, 4]);
    assert_eq!(batches_and_units("lone_failure_test"), (4.0, 4.0));
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_with_a_transient_error() {
    let db = database().await;
    let options = GroupCommitOptions {
        queue_capacity: 2,
        ..GroupCommitOptions::default()
    };
    let writer = GroupCommit::start("queue_test", db.pool.clone(), options);
    // The writer cannot run before this test awaits: two units fill the queue.
    let queued = [insert_note(&writer, 1), insert_note(&writer, 2)];
    let refused = insert_note(&writer, 3).await;
    match refused {
        Err(TestError::Write(error @ WriteError::QueueFull { capacity: 2, .. })) => {
            assert!(error.is_transient());
            assert_eq!(
                error.to_string(),
                "the queue_test database has 2 writes waiting already; try again"
            );
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    for answer in join_all(queued).await {
        answer.expect("the queued units commit");
    }
    assert_eq!(note_ids(&db.observer).await, vec![1, 2]);
    let text = crate::telemetry::metrics::encode_text();
    assert!(
        text.contains(
            "mesh_storage_write_units_total{database=\"queue_test\",outcome=\"refused\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("mesh_storage_write_queue_depth{database=\"queue_test\"} 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acknowledged_unit_is_committed_for_every_other_connection() {
    let db = database().await;
    let writer = writer("visibility_test", &db.pool);
    let callers = (1..=64).map(|id| {
        let writer = writer.clone();
        let observer = db.observer.clone();
        tokio::spawn(async move {
            insert_note(&writer, id).await.expect("commits");
            // Answered only after COMMIT: another connection sees it at once.
            let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notes WHERE id = $1")
                .bind(id)
                .fetch_one(&observer)
                .await
                .expect("observe");
            found
        })
    });
    for (found, id) in join_all(callers).await.into_iter().zip(1..) {
        assert_eq!(
            found.expect("caller task"),
            1,
            "note {id} was answered before its commit"
        );
    }
    let (batches, units) = batches_and_units("visibility_test");
    assert_eq!(units, 64.0);
    assert!((1.0..=64.0).contains(&batches));
}

#[tokio::test]
async fn a_lone_unit_is_committed_without_waiting_for_company() {
    let db = database().await;
    // A collection window far longer than the test's bound: a lone unit must
    // not wait for it.
    let options = GroupCommitOptions {
        collect_window: Duration::from_secs(3600),
        ..GroupCommitOptions::default()
    };
    let writer = GroupCommit::start("lone_test", db.pool.clone(), options);
    for id in 1..=3 {
        tokio::time::timeout(Duration::from_secs(60), insert_note(&writer, id))
            .await
            .expect("a lone unit does not wait for the window")
            .expect("commits");
    }
    assert_eq!(batches_and_units("lone_test"), (3.0, 3.0));
}

#[tokio::test]
async fn the_writer_stops_after_the_last_handle_and_answers_what_was_queued() {
    let db = database().await;
    let writer = writer("stop_test", &db.pool);
    let pending = insert_note(&writer, 1);
    drop(writer);
    assert_eq!(pending.await.expect("queued before the drop: committed"), 1);
    assert_eq!(note_ids(&db.observer).await, vec![1]);
}

/// A unit whose answer panics: a panic in the writer outside any unit's
/// savepoint (after COMMIT), as a bug in the writer's own code would be.
struct AnswerThatPanics;

impl job::Answer for AnswerThatPanics {
    fn send(self: Box<Self>, _commit: Result<(), &WriteError>) {
        panic!("a bug outside any write unit");
    }
}

struct UnitWithPanickingAnswer;

impl job::Job for UnitWithPanickingAnswer {
    fn run<'c>(
        self: Box<Self>,
        _connection: &'c mut sqlx::AnyConnection,
    ) -> futures::future::BoxFuture<'c, job::Executed> {
        Box::pin(async {
            job::Executed {
                succeeded: true,
                answer: Box::new(AnswerThatPanics),
            }
        })
    }
}

impl job::Fail for UnitWithPanickingAnswer {
    fn fail(self: Box<Self>, _error: &WriteError) {}
}

#[tokio::test]
async fn a_panic_outside_a_unit_fails_its_batch_loudly_and_the_writer_goes_on() {
    let db = database().await;
    let writer = writer("outside_panic_test", &db.pool);
    // One batch (current-thread runtime): 1, the unit whose answer panics, 2.
    let answered = insert_note(&writer, 1);
    writer
        .enqueue(Box::new(UnitWithPanickingAnswer))
        .expect("queued");
    let unanswered = insert_note(&writer, 2);
    let (answered, unanswered) = tokio::join!(answered, unanswered);
    answered.expect("answered before the panic");
    // Its caller is told, not left waiting.
    assert!(
        matches!(
            unanswered,
            Err(TestError::Write(WriteError::Panicked { .. }))
        ),
        "{unanswered:?}"
    );
    // Not a wedge: the next writes go through the same writer.
    assert_eq!(insert_note(&writer, 3).await.expect("still writing"), 3);
    assert_eq!(insert_note(&writer, 4).await.expect("still writing"), 4);
    assert_eq!(note_ids(&db.observer).await, vec![1, 2, 3, 4]);
}

/// Marks the writer's current connection (a TEMP table lives and dies with
/// its connection) and answers whether it was marked already.
fn mark_connection(
    writer: &GroupCommit,
) -> impl Future<Output = Result<bool, TestError>> + Send + 'static {
    writer.write(|connection| {
        Box::pin(async move {
            let marked: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_temp_master WHERE name = 'writer_mark'",
            )
            .fetch_one(&mut *connection)
            .await?;
            sqlx::query("CREATE TEMP TABLE IF NOT EXISTS writer_mark (x BIGINT)")
                .execute(&mut *connection)
                .await?;
            Ok(marked == 1)
        })
    })
}

#[tokio::test]
async fn the_writer_keeps_its_connection_between_batches_but_not_after_a_failed_one() {
    let db = database().await;
    let writer = writer("kept_connection_test", &db.pool);
    assert!(!mark_connection(&writer).await.expect("first batch"));
    // Time for a connection returned to the pool to be idle there (sqlx
    // returns it from a task of its own, after a ping).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        db.pool.size() as usize - db.pool.num_idle(),
        1,
        "the writer holds its connection between batches (no return, no ping per batch)"
    );
    assert!(
        mark_connection(&writer).await.expect("second batch"),
        "the next batch runs on the same connection"
    );
    // A batch that cannot commit: its connection is not kept.
    let orphan = insert_orphan(&writer).await;
    assert!(matches!(
        orphan,
        Err(TestError::Write(WriteError::Batch { .. }))
    ));
    assert!(
        !mark_connection(&writer)
            .await
            .expect("batch after the failure"),
        "a failed batch's connection is closed; the next batch takes another"
    );
    // Reads still have the rest of the pool.
    assert!(note_ids(&db.pool).await.is_empty());
}
