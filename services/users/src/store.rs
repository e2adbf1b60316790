//! The users table over `sqlx::AnyPool`: portable SQL with `$n` placeholders
//! that SQLite and PostgreSQL both accept, `i64`/`String` columns only.
//!
//! Every write is a single statement, so nothing is ever partially written;
//! email uniqueness is the database's UNIQUE index, so two instances sharing
//! the database cannot both create the same email. Writes go through the
//! database's group-commit writer ([`mesh::storage::GroupCommit`]): a user is
//! answered only once its row is committed durably, and concurrent sign-ups
//! share that commit. Reads of a SQLite file run on its reader threads
//! ([`mesh::storage::Reader`]; the same SQL), PostgreSQL's on the pool.

use mesh::storage::{
    GroupCommit, GroupCommitOptions, NumberedArgs, ReadError, Reader, StorageError, WriteError,
};
use sqlx::{any::AnyRow, AnyPool, Row};

use crate::domain::{NewUser, PageKey};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No user has this id.
    #[error("user {0} not found")]
    NotFound(String),
    /// Another user already has this email.
    #[error("a user with email {0} already exists")]
    EmailTaken(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database failed (a read on SQLite's reader thread).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The write was not committed (a full queue, a failed batch).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The read did not run (its queue was full, the readers stopped).
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// `u_…`
    pub user_id: String,
    /// Lower-cased.
    pub email: String,
    /// As given, trimmed.
    pub display_name: String,
    /// When it was created.
    pub created_at_unix_ms: i64,
}

/// One page of users in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The users of this page.
    pub users: Vec<UserRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageKey>,
}

/// The users database.
#[derive(Debug, Clone)]
pub struct Store {
    reader: Reader,
    writer: GroupCommit,
}

const COLUMNS: &str = "user_id, email, display_name, created_at_unix_ms";

/// One user by id (`$1`).
static GET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM users WHERE user_id = $1"));
/// The first page (`$1` its size plus one).
static FIRST_PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM users ORDER BY created_at_unix_ms, user_id LIMIT $1")
});
/// The page after a key (`$1` its time, `$2` its id, `$3` the size plus one).
static NEXT_PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM users \
         WHERE created_at_unix_ms > $1 OR (created_at_unix_ms = $1 AND user_id > $2) \
         ORDER BY created_at_unix_ms, user_id LIMIT $3"
    )
});

impl Store {
    /// Wraps an open, migrated pool and starts its writer and readers (call
    /// inside a Tokio runtime).
    pub fn new(pool: AnyPool) -> Result<Self, StorageError> {
        let reader = Reader::start("users", &pool)?;
        let writer = GroupCommit::start("users", pool, GroupCommitOptions::default());
        Ok(Self { reader, writer })
    }

    /// Inserts a user; [`StoreError::EmailTaken`] if the email is in use.
    pub async fn create(
        &self,
        user_id: &str,
        user: &NewUser,
        created_at_unix_ms: i64,
    ) -> Result<UserRecord, StoreError> {
        let record = UserRecord {
            user_id: user_id.to_owned(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            created_at_unix_ms,
        };
        let row = record.clone();
        self.writer
            .write(move |connection| {
                Box::pin(async move {
                    let inserted = sqlx::query(
                        "INSERT INTO users (user_id, email, display_name, created_at_unix_ms) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&row.user_id)
                    .bind(&row.email)
                    .bind(&row.display_name)
                    .bind(row.created_at_unix_ms)
                    .execute(&mut *connection)
                    .await;
                    match inserted {
                        Ok(_) => Ok(()),
                        // The only other unique key is the random 122-bit user id.
                        Err(error) if mesh::storage::is_unique_violation(&error) => {
                            Err(StoreError::EmailTaken(row.email))
                        }
                        Err(error) => Err(error.into()),
                    }
                })
            })
            .await?;
        Ok(record)
    }

    /// One user by id.
    pub async fn get(&self, user_id: &str) -> Result<UserRecord, StoreError> {
        let args = NumberedArgs::new().arg(user_id.to_owned());
        let found = match &self.reader {
            Reader::Sqlite(reader) => {
                reader
                    .read(move |connection| {
                        Ok::<_, StoreError>(args.first_row(connection, &GET, record_of_row)?)
                    })
                    .await?
            }
            Reader::Pool(pool) => match sqlx::query(&GET).bind(user_id).fetch_optional(pool).await?
            {
                Some(row) => Some(record(&row)?),
                None => None,
            },
        };
        found.ok_or_else(|| StoreError::NotFound(user_id.to_owned()))
    }

    /// Up to `size` users after `after` (from the start when `None`), ordered
    /// by (created_at_unix_ms, user_id): a keyset page, stable while users are added.
    pub async fn list(&self, size: i64, after: Option<&PageKey>) -> Result<Page, StoreError> {
        let (sql, args) = match after {
            None => (&*FIRST_PAGE, NumberedArgs::new().arg(size + 1)),
            Some(key) => (
                &*NEXT_PAGE,
                NumberedArgs::new()
                    .arg(key.created_at_unix_ms)
                    .arg(key.user_id.clone())
                    .arg(size + 1),
            ),
        };
        let mut users = match &self.reader {
            Reader::Sqlite(reader) => {
                reader
                    .read(move |connection| {
                        Ok::<_, StoreError>(args.rows(connection, sql, record_of_row)?)
                    })
                    .await?
            }
            Reader::Pool(pool) => {
                let rows = args.bind_to(sqlx::query(sql)).fetch_all(pool).await?;
                rows.iter().map(record).collect::<Result<Vec<_>, _>>()?
            }
        };
        let more = users.len() as i64 > size;
        users.truncate(usize::try_from(size).unwrap_or(0));
        let next = match users.last() {
            Some(last) if more => Some(PageKey {
                created_at_unix_ms: last.created_at_unix_ms,
                user_id: last.user_id.clone(),
            }),
            _ => None,
        };
        Ok(Page { users, next })
    }
}

/// A user from a row of [`COLUMNS`] on a reader thread.
fn record_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user_id: row.get("user_id")?,
        email: row.get("email")?,
        display_name: row.get("display_name")?,
        created_at_unix_ms: row.get("created_at_unix_ms")?,
    })
}

fn record(row: &AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        created_at_unix_ms: row.try_get("created_at_unix_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::domain::new_user_id;

    async fn open(dir: &std::path::Path) -> Store {
        let pool = mesh::storage::open("users", None, dir, &crate::MIGRATOR)
            .await
            .expect("open the users database");
        Store::new(pool).expect("start the users store")
    }

    fn user(email: &str) -> NewUser {
        NewUser {
            email: email.into(),
            display_name: "Someone".into(),
        }
    }

    #[tokio::test]
    async fn create_then_get_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let id = new_user_id();
        let created = store.create(&id, &user("a@b.co"), 1_000).await.unwrap();
        assert_eq!(store.get(&id).await.unwrap(), created);
        assert_eq!(created.created_at_unix_ms, 1_000);
        match store.get("u_missing").await {
            Err(StoreError::NotFound(id)) => assert_eq!(id, "u_missing"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_unique_index_refuses_a_second_user_with_the_same_email() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        store
            .create(&new_user_id(), &user("a@b.co"), 1)
            .await
            .unwrap();
        match store.create(&new_user_id(), &user("a@b.co"), 2).await {
            Err(StoreError::EmailTaken(email)) => assert_eq!(email, "a@b.co"),
            other => panic!("expected EmailTaken, got {other:?}"),
        }
        let page = store.list(10, None).await.unwrap();
        assert_eq!(page.users.len(), 1, "the refused insert left nothing");
    }

    #[tokio::test]
    async fn two_pools_on_one_file_share_the_unique_index() {
        // Two instances of the service: two pools on the same SQLite file.
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path()).await;
        let second = open(dir.path()).await;
        let attempts = (0..8).map(|i| {
            let store = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tokio::spawn(async move { store.create(&new_user_id(), &user("same@b.co"), i).await })
        });
        let mut created = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::EmailTaken(_)) => {}
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        assert_eq!(created, 1);
    }

    #[tokio::test]
    async fn keyset_pages_follow_creation_order_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        // Two users share a millisecond: the id breaks the tie.
        let times = [10, 20, 20, 30, 40, 50, 60];
        let mut expected = Vec::new();
        for (i, at) in times.iter().enumerate() {
            let id = new_user_id();
            store
                .create(&id, &user(&format!("u{i}@b.co")), *at)
                .await
                .unwrap();
            expected.push((*at, id));
        }
        expected.sort();

        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut after = None;
        loop {
            let page = store.list(3, after.as_ref()).await.unwrap();
            sizes.push(page.users.len());
            seen.extend(
                page.users
                    .iter()
                    .map(|u| (u.created_at_unix_ms, u.user_id.clone())),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(sizes, vec![3, 3, 1]);
        assert_eq!(seen, expected);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);

        // An exact multiple: the last full page says there is nothing more
        // only when it really is the end.
        let all = store.list(7, None).await.unwrap();
        assert_eq!(all.users.len(), 7);
        assert_eq!(all.next, None);
        let empty_dir = tempfile::tempdir().unwrap();
        let page = open(empty_dir.path()).await.list(50, None).await.unwrap();
        assert!(page.users.is_empty() && page.next.is_none());
    }

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = new_user_id();
        {
            let store = open(dir.path()).await;
            store.create(&id, &user("keep@b.co"), 5).await.unwrap();
        }
        let reopened = open(dir.path()).await;
        assert_eq!(reopened.get(&id).await.unwrap().email, "keep@b.co");
    }
}
