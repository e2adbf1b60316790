//! Group commit: one writer task per database takes the write units of
//! concurrent requests and commits them together, so that many requests
//! share one durable flush (one `fsync` of SQLite's WAL, one WAL flush of
//! PostgreSQL) instead of paying one each.
//!
//! A **write unit** is a closure that runs SQL on the connection it is given
//! (no remote calls, no long waits: the whole batch waits for it). The writer:
//!
//! 1. takes the first unit from its bounded queue, then every unit already
//!    waiting, up to [`GroupCommitOptions::max_batch`]; only when others were
//!    waiting does it also wait up to [`GroupCommitOptions::collect_window`]
//!    for more — a lone request (concurrency 1) is never delayed;
//! 2. begins one transaction (`BEGIN IMMEDIATE` on SQLite, so a batch never
//!    has to upgrade a read lock);
//! 3. runs each unit, in queue order, inside its own `SAVEPOINT`: a unit that
//!    fails is rolled back to its savepoint alone, the others go on (a batch
//!    of one unit needs no savepoint: the transaction is the unit's, rolled
//!    back if it fails; the savepoint statements are prepared once per
//!    connection, not parsed per unit; on SQLite the statements that meet at
//!    a unit boundary go as one query, and the last unit's release is the
//!    COMMIT's: `n + 1` round trips per batch of `n` beside the units' own,
//!    not `2n + 2`);
//! 4. commits, and only then answers every caller — the failed units too,
//!    since what they read may have been written by their batch.
//! 5. keeps the batch's connection for the next batch instead of returning
//!    it to the pool (sqlx tests a returned connection with a ping, a round
//!    trip per batch for nothing); a connection idle for 10 s is tested
//!    before its next batch, and a failed batch's connection is closed.
//!
//! So an acknowledged unit is durable (with the connection settings of
//! [`super::open`]); a unit whose batch cannot commit gets a
//! [`WriteError::Batch`] and none of its changes exist. Units are applied in
//! the order [`GroupCommit::write`] was called.
//!
//! A unit sees the uncommitted changes of the units before it in its batch,
//! as it would after their commits had it run alone: the batch is the serial
//! execution of its units. A caller that goes away (a cancelled RPC) does not
//! withdraw its unit: it commits or fails with its batch, unanswered.

mod intake;
mod job;
mod metrics;
mod thread;
mod writer;

#[cfg(test)]
mod test_tables;
#[cfg(test)]
mod tests;

use std::{future::Future, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool};
use tokio::sync::{mpsc, oneshot};

use job::{Job, TypedJob};
use metrics::WriterMetrics;
pub(crate) use thread::{open_file, run_cached};
pub use thread::{SqliteWriter, SqliteWriterError};

/// How a writer batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitOptions {
    /// Units that may wait for the writer; a unit beyond them is refused at
    /// once with [`WriteError::QueueFull`] (transient: the service answers
    /// UNAVAILABLE) rather than queueing without bound.
    pub queue_capacity: usize,
    /// Most units committed in one transaction.
    pub max_batch: usize,
    /// How long a batch that found other units waiting keeps collecting new
    /// ones before it begins. Zero never waits.
    pub collect_window: Duration,
}

impl Default for GroupCommitOptions {
    /// 1,024 waiting units, batches of at most 64, a 200 µs window: a
    /// synced write on the disks measured here takes ~0.4 ms, so the window
    /// adds at most half a flush to a batch that already has company.
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_batch: 64,
            collect_window: Duration::from_micros(200),
        }
    }
}

/// Why a unit was not committed, as its caller's error type receives it
/// (the unit's own errors reach the caller unchanged).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The writer's queue was full.
    #[error("the {database} database has {capacity} writes waiting already; try again")]
    QueueFull {
        /// The database (service) name.
        database: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The writer has stopped (the process is shutting down).
    #[error("the {database} database's writer has stopped")]
    Stopped {
        /// The database (service) name.
        database: String,
    },
    /// The unit panicked (its savepoint was rolled back), or its writer
    /// panicked outside the unit before answering it (the writer goes on
    /// with the next batch; this batch was not confirmed to this caller).
    #[error("a write to the {database} database panicked and was not confirmed")]
    Panicked {
        /// The database (service) name.
        database: String,
    },
    /// The unit's batch could not begin, run or commit: nothing of it exists.
    #[error("the {database} database could not commit a batch of {units} writes: {source}")]
    Batch {
        /// The database (service) name.
        database: String,
        /// Units in the batch.
        units: usize,
        /// Whether the cause is worth a retry ([`super::is_transient`]).
        transient: bool,
        /// What failed (a `sqlx::Error` from [`GroupCommit`], a
        /// `rusqlite::Error` from [`SqliteWriter`]).
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl WriteError {
    /// Whether a retry may succeed (the service answers UNAVAILABLE): a full
    /// queue, a stopping writer, a batch that failed for a transient reason.
    pub fn is_transient(&self) -> bool {
        match self {
            WriteError::QueueFull { .. } | WriteError::Stopped { .. } => true,
            WriteError::Panicked { .. } => false,
            WriteError::Batch { transient, .. } => *transient,
        }
    }
}

/// The handle to one database's writer task; clones share the writer. The
/// writer stops when the last handle is dropped, after the units queued.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    intake: intake::Intake,
    queue: mpsc::Sender<Box<dyn Job>>,
}

impl GroupCommit {
    /// Starts the writer of `database` (its name labels the metrics and the
    /// errors) on `pool`. Call inside a Tokio runtime.
    pub fn start(database: &str, pool: AnyPool, options: GroupCommitOptions) -> Self {
        let capacity = options.queue_capacity.max(1);
        let (queue, receiver) = mpsc::channel(capacity);
        let metrics = WriterMetrics::new(database);
        tokio::spawn(writer::run(
            writer::Writer::new(database, pool, options, metrics.clone()),
            receiver,
        ));
        Self {
            shared: Arc::new(Shared {
                intake: intake::Intake {
                    database: database.to_owned(),
                    capacity,
                    metrics,
                },
                queue,
            }),
        }
    }

    /// Queues `unit` now (so units run in the order of these calls) and
    /// returns its answer, which comes once its batch has committed. `E`
    /// receives the unit's own errors and the writer's [`WriteError`]s.
    ///
    /// ```no_run
    /// # async fn example(writer: mesh::storage::GroupCommit) -> Result<u64, sqlx::Error> {
    /// #[derive(Debug)]
    /// enum Error { Sql(sqlx::Error), Write(mesh::storage::WriteError) }
    /// impl From<mesh::storage::WriteError> for Error {
    ///     fn from(error: mesh::storage::WriteError) -> Self { Error::Write(error) }
    /// }
    /// let inserted = writer
    ///     .write(|connection| {
    ///         Box::pin(async move {
    ///             sqlx::query("INSERT INTO notes (id, body) VALUES (1, 'x')")
    ///                 .execute(&mut *connection)
    ///                 .await
    ///                 .map(|done| done.rows_affected())
    ///                 .map_err(Error::Sql)
    ///         })
    ///     })
    ///     .await;
    /// # Ok(inserted.unwrap())
    /// # }
    /// ```
    pub fn write<F, T, E>(&self, unit: F) -> impl Future<Output = Result<T, E>> + Send + 'static
    where
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<WriteError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let queued = self.enqueue(Box::new(TypedJob::new(unit, reply)));
        self.shared.intake.answer(queued, answer)
    }

    fn enqueue(&self, job: Box<dyn Job>) -> Result<(), WriteError> {
        let shared = &self.shared;
        shared.intake.hand_over(|| {
            shared.queue.try_send(job).map_err(|refused| match refused {
                mpsc::error::TrySendError::Full(_) => intake::Refusal::Full,
                mpsc::error::TrySendError::Closed(_) => intake::Refusal::Stopped,
            })
        })
    }
}
