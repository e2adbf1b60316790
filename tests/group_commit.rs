//! The group-commit writer (`mesh::storage::GroupCommit`) on a real
//! PostgreSQL server, where a failed statement aborts the whole transaction
//! unless it is rolled back to a savepoint: one failing unit must not take
//! its batch down, and concurrent callers share commits.

use futures::future::join_all;
use mesh::storage::{GroupCommit, GroupCommitOptions, WriteError};
use sqlx::{migrate::Migrator, AnyPool};
use testkit::Postgres;

#[derive(Debug, thiserror::Error)]
enum UnitError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn insert(
    writer: &GroupCommit,
    id: i64,
) -> impl std::future::Future<Output = Result<(), UnitError>> + Send + 'static {
    writer.write(move |connection| {
        Box::pin(async move {
            sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'note')")
                .bind(id)
                .execute(&mut *connection)
                .await?;
            Ok(())
        })
    })
}

async fn ids(pool: &AnyPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM notes ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("read notes")
}

// The current-thread runtime: the writer cannot start before the test
// awaits, so units queued together are one batch.
#[tokio::test]
async fn on_postgresql_a_failing_unit_rolls_back_alone_and_callers_share_commits() {
    let postgres = Postgres::start();
    let url = postgres.create_database("notes");
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = mesh::storage::open("notes", Some(&url), dir.path(), &Migrator::DEFAULT)
        .await
        .expect("open PostgreSQL");
    sqlx::query("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("create notes");
    let writer = GroupCommit::start("notes", pool.clone(), GroupCommitOptions::default());

    // One batch: the duplicate fails inside it (PostgreSQL aborts the
    // transaction until its savepoint is rolled back), the unit after it
    // still commits.
    let batch = vec![insert(&writer, 1), insert(&writer, 1), insert(&writer, 2)];
    let answers = join_all(batch).await;
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    match &answers[1] {
        Err(UnitError::Sql(error)) => assert!(mesh::storage::is_unique_violation(error)),
        other => panic!("expected the duplicate's own error, got {other:?}"),
    }
    assert!(answers[2].is_ok(), "{:?}", answers[2]);
    assert_eq!(ids(&pool).await, vec![1, 2]);

    // Many concurrent callers: all committed, visible to every connection.
    let callers = (10..74).map(|id| {
        let writer = writer.clone();
        tokio::spawn(async move { insert(&writer, id).await })
    });
    for answer in join_all(callers).await {
        answer.expect("caller task").expect("commits");
    }
    assert_eq!(ids(&pool).await.len(), 66);
}
