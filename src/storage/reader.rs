//! Reads of a SQLite file on threads that own their connections:
//! [`SqliteReader`] runs each read — a plain closure over a read-only
//! `rusqlite` connection, inside one read transaction, so that it sees one
//! snapshot — on one of a few reader threads and sends its answer back.
//!
//! A read through sqlx's pool crosses to the connection's worker thread and
//! back for every statement, and again when the connection is returned (the
//! pool's ping); here a read is one hand-off into a thread and one answer,
//! and a thread that finds more reads queued runs them without sleeping
//! (docs/adr/0024-*). WAL lets these connections read while the writer
//! writes; a read started after a write's answer sees that write.

use std::{panic::AssertUnwindSafe, path::Path, sync::Arc};

use tokio::sync::oneshot;

use super::{group_commit::run_cached, SqliteWriterError};

/// How many reads may wait for a reader thread before a read is refused
/// with [`ReadError::Busy`].
pub const READ_QUEUE_CAPACITY: usize = 1024;

/// Why a read did not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// Every reader thread is busy and the queue is full.
    #[error("the {database} database has {capacity} reads waiting already; try again")]
    Busy {
        /// The database (service) name.
        database: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The reader threads have stopped (the process is shutting down).
    #[error("the {database} database's readers have stopped")]
    Stopped {
        /// The database (service) name.
        database: String,
    },
    /// The read panicked (its transaction was rolled back).
    #[error("a read of the {database} database panicked")]
    Panicked {
        /// The database (service) name.
        database: String,
    },
}

impl ReadError {
    /// Whether a retry may succeed (the service answers UNAVAILABLE).
    pub fn is_transient(&self) -> bool {
        matches!(self, ReadError::Busy { .. } | ReadError::Stopped { .. })
    }
}

/// A queued read, its result type erased.
type Job = Box<dyn FnOnce(&rusqlite::Connection) + Send>;

/// The handle to one SQLite database's reader threads; clones share them.
/// The threads end when the last handle is dropped, after the reads queued.
#[derive(Debug, Clone)]
pub struct SqliteReader {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    database: String,
    queue: flume::Sender<Job>,
}

impl SqliteReader {
    /// Opens `threads` read-only connections to `path` (an existing,
    /// migrated SQLite database in WAL mode) and starts a thread for each;
    /// `database` names the errors and the threads.
    pub fn start(database: &str, path: &Path, threads: usize) -> Result<Self, SqliteWriterError> {
        let (queue, receiver) = flume::bounded::<Job>(READ_QUEUE_CAPACITY);
        for index in 0..threads.max(1) {
            let connection = open(database, path)?;
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("{database}-reader-{index}"))
                .spawn(move || serve(&connection, &receiver))
                .map_err(|source| SqliteWriterError::Thread {
                    database: database.to_owned(),
                    source,
                })?;
        }
        Ok(Self {
            shared: Arc::new(Shared {
                database: database.to_owned(),
                queue,
            }),
        })
    }

    /// Queues `read` now and returns its answer. It runs on a reader thread
    /// inside a read transaction: plain SQL, no waiting on anything else.
    /// `E` receives the read's own errors and the reader's [`ReadError`]s.
    pub fn read<F, T, E>(
        &self,
        read: F,
    ) -> impl std::future::Future<Output = Result<T, E>> + Send + 'static
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<ReadError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            // If the caller has gone, its answer is dropped with the reply.
            let _ = reply.send(read(connection));
        });
        let database = self.shared.database.clone();
        let queued = self
            .shared
            .queue
            .try_send(job)
            .map_err(|refused| match refused {
                flume::TrySendError::Full(_) => ReadError::Busy {
                    database: database.clone(),
                    capacity: READ_QUEUE_CAPACITY,
                },
                flume::TrySendError::Disconnected(_) => ReadError::Stopped {
                    database: database.clone(),
                },
            });
        async move {
            queued.map_err(E::from)?;
            match answer.await {
                Ok(result) => result,
                // The reply was dropped unsent: the read panicked.
                Err(_) => Err(E::from(ReadError::Panicked { database })),
            }
        }
    }
}

/// A reader's connection: read-only, waiting out a checkpoint's lock like
/// the pool's connections do.
fn open(database: &str, path: &Path) -> Result<rusqlite::Connection, SqliteWriterError> {
    super::group_commit::open_file(
        database,
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        "PRAGMA busy_timeout = 10000; PRAGMA query_only = ON;",
    )
}

/// Runs reads until every handle is dropped; each inside `BEGIN` …
/// `ROLLBACK`, so that a read of several statements sees one snapshot.
fn serve(connection: &rusqlite::Connection, queue: &flume::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        if let Err(error) = run_cached(connection, "BEGIN") {
            tracing::warn!(%error, "a reader could not begin a read transaction");
        }
        // On a panic the job's reply is dropped unsent: its caller gets
        // Panicked, and the transaction is rolled back below.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(connection)));
        if !connection.is_autocommit() {
            if let Err(error) = run_cached(connection, "ROLLBACK") {
                tracing::warn!(%error, "a reader could not end its read transaction");
            }
        }
    }
}

#[cfg(test)]
mod tests;
