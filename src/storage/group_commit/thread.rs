//! Group commit on SQLite's own thread: [`SqliteWriter`] runs each batch —
//! `BEGIN IMMEDIATE`, every unit inside its savepoint, `COMMIT` — whole on
//! one thread that owns a `rusqlite` connection to the database's file.
//!
//! The async writer ([`super::GroupCommit`]) sends every statement of a unit
//! to sqlx's worker thread for the connection and waits for its answer: two
//! thread hand-offs (a wake-up each way) per statement, which on SQLite cost
//! more than the statement (docs/adr/0023-*). Here a unit is a plain closure
//! over the connection, run where the connection lives: one hand-off into
//! the thread per batch (none while it is busy) and one answer per unit.
//! The batching, the savepoint rules, the answers after COMMIT, the queue's
//! bound, the metrics and the errors are the async writer's (its module
//! doc); a panicking unit is rolled back alone and answered
//! [`WriteError::Panicked`].

use std::{
    panic::AssertUnwindSafe,
    path::Path,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use super::{
    intake::{Intake, Refusal},
    job::{answer_committed, answer_failed_batch, Executed, Fail, TypedAnswer, TypedJob},
    metrics::{UnitOutcome, WriterMetrics},
    GroupCommitOptions, WriteError,
};

/// A unit on the writer's thread.
trait ThreadJob: Fail {
    /// Runs the unit; `Err` if it panicked.
    fn run(self: Box<Self>, connection: &rusqlite::Connection) -> Result<Executed, ()>;
}

impl<F, T, E> ThreadJob for TypedJob<F, T, E>
where
    F: FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<WriteError> + Send + 'static,
{
    fn run(self: Box<Self>, connection: &rusqlite::Connection) -> Result<Executed, ()> {
        let (unit, reply) = (*self).into_parts();
        // On a panic the reply is dropped unsent: the caller gets Panicked.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| unit(connection))).map_err(drop)?;
        Ok(Executed {
            succeeded: result.is_ok(),
            answer: Box::new(TypedAnswer::new(result, reply)),
        })
    }
}

/// The handle to one SQLite database's writer thread; clones share it. The
/// thread ends when the last handle is dropped, after the units queued.
#[derive(Debug, Clone)]
pub struct SqliteWriter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    intake: Intake,
    queue: mpsc::SyncSender<Box<dyn ThreadJob>>,
}

/// Why the writer's (or a reader's) connection or thread could not be
/// started.
#[derive(Debug, thiserror::Error)]
pub enum SqliteWriterError {
    /// Opening or setting up the connection failed.
    #[error("cannot open a connection to the {database} database on {path}: {source}")]
    Open {
        /// The database (service) name.
        database: String,
        /// The file.
        path: String,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The writer's (or a reader's) thread could not be started.
    #[error("cannot start a thread of the {database} database: {source}")]
    Thread {
        /// The database (service) name.
        database: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The SQLite database is not a file (an in-memory one), so the
    /// writer's connection would not see the pool's.
    #[error("the {database} SQLite database is not a file; its writer needs one it can share with the pool")]
    NotAFile {
        /// The database (service) name.
        database: String,
    },
    /// The connection would not commit durably (WAL, `synchronous = FULL`).
    #[error("the {database} database's writer connection is not durable: {setting}")]
    NotDurable {
        /// The database (service) name.
        database: String,
        /// What the connection reported.
        setting: String,
    },
}

impl SqliteWriter {
    /// Opens `path` (an existing, migrated SQLite database) with the pool's
    /// connection settings (WAL, `synchronous = FULL`, a 10 s busy timeout,
    /// foreign keys) and starts its writer thread; `database` names the
    /// metrics, the errors and the thread.
    pub fn start(
        database: &str,
        path: &Path,
        options: GroupCommitOptions,
    ) -> Result<Self, SqliteWriterError> {
        let connection = open(database, path)?;
        let capacity = options.queue_capacity.max(1);
        let (queue, receiver) = mpsc::sync_channel(capacity);
        let metrics = WriterMetrics::new(database);
        let thread = Thread {
            database: database.to_owned(),
            connection,
            max_batch: options.max_batch.max(1),
            collect_window: options.collect_window,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name(format!("{database}-writer"))
            .spawn(move || thread.serve(&receiver))
            .map_err(|source| SqliteWriterError::Thread {
                database: database.to_owned(),
                source,
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                intake: Intake {
                    database: database.to_owned(),
                    capacity,
                    metrics,
                },
                queue,
            }),
        })
    }

    /// Queues `unit` now (units run in the order of these calls) and returns
    /// its answer, which comes once its batch has committed. The unit runs on
    /// the writer's thread inside its savepoint: plain SQL, no waiting on
    /// anything else. `E` receives the unit's own errors and the writer's
    /// [`WriteError`]s.
    pub fn write<F, T, E>(
        &self,
        unit: F,
    ) -> impl std::future::Future<Output = Result<T, E>> + Send + 'static
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<WriteError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn ThreadJob> = Box::new(TypedJob::new(unit, reply));
        let shared = &self.shared;
        let queued = shared.intake.hand_over(|| {
            shared.queue.try_send(job).map_err(|refused| match refused {
                mpsc::TrySendError::Full(_) => Refusal::Full,
                mpsc::TrySendError::Disconnected(_) => Refusal::Stopped,
            })
        });
        shared.intake.answer(queued, answer)
    }
}

/// A connection of this thread to `path` (`flags` besides no mutex: one
/// thread uses it), set up with `settings`.
pub(crate) fn open_file(
    database: &str,
    path: &Path,
    flags: rusqlite::OpenFlags,
    settings: &str,
) -> Result<rusqlite::Connection, SqliteWriterError> {
    let failed = |source| SqliteWriterError::Open {
        database: database.to_owned(),
        path: path.display().to_string(),
        source,
    };
    let connection = rusqlite::Connection::open_with_flags(
        path,
        flags | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(failed)?;
    connection.execute_batch(settings).map_err(failed)?;
    Ok(connection)
}

/// Runs a statement without arguments (`BEGIN`, `SAVEPOINT`…) from the
/// connection's statement cache: `execute_batch` would compile it again at
/// every use.
pub(crate) fn run_cached(connection: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

/// The writer's connection, set up as the pool's are, and checked.
fn open(database: &str, path: &Path) -> Result<rusqlite::Connection, SqliteWriterError> {
    let failed = |source| SqliteWriterError::Open {
        database: database.to_owned(),
        path: path.display().to_string(),
        source,
    };
    let connection = open_file(
        database,
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        crate::storage::durability::SQLITE_CONNECTION_SETTINGS,
    )?;
    let journal: String = connection
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(failed)?;
    let synchronous: i64 = connection
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .map_err(failed)?;
    // synchronous: 2 is FULL, 3 EXTRA.
    if !journal.eq_ignore_ascii_case("wal") || synchronous < 2 {
        return Err(SqliteWriterError::NotDurable {
            database: database.to_owned(),
            setting: format!("journal_mode = {journal}, synchronous = {synchronous}"),
        });
    }
    Ok(connection)
}

/// The writer thread's state.
struct Thread {
    database: String,
    connection: rusqlite::Connection,
    max_batch: usize,
    collect_window: Duration,
    metrics: WriterMetrics,
}

/// Savepoint statements, as in the async writer.
const SAVEPOINT: &str = "SAVEPOINT unit";
const RELEASE: &str = "RELEASE SAVEPOINT unit";
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT unit";

impl Thread {
    /// Serves `queue` until every handle is dropped and the units queued
    /// before are answered.
    fn serve(self, queue: &mpsc::Receiver<Box<dyn ThreadJob>>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Ok(first) = queue.recv() {
            batch.push(first);
            self.collect(queue, &mut batch);
            self.metrics.dequeued(batch.len());
            self.commit(std::mem::take(&mut batch));
        }
    }

    /// Adds what the queue holds now; only if others were waiting, also
    /// what arrives while this thread yields the core, for at most the
    /// collection window and as long as units keep arriving (a lone unit is
    /// never delayed).
    fn collect(
        &self,
        queue: &mpsc::Receiver<Box<dyn ThreadJob>>,
        batch: &mut Vec<Box<dyn ThreadJob>>,
    ) {
        self.take_ready(queue, batch);
        if batch.len() < 2 || self.collect_window.is_zero() {
            return;
        }
        let until = Instant::now() + self.collect_window;
        while batch.len() < self.max_batch && Instant::now() < until {
            std::thread::yield_now();
            if self.take_ready(queue, batch) == 0 {
                break;
            }
        }
    }

    fn take_ready(
        &self,
        queue: &mpsc::Receiver<Box<dyn ThreadJob>>,
        batch: &mut Vec<Box<dyn ThreadJob>>,
    ) -> usize {
        super::intake::fill(batch, self.max_batch, || queue.try_recv().ok())
    }

    /// Runs, commits and answers one batch.
    fn commit(&self, batch: Vec<Box<dyn ThreadJob>>) {
        let started = Instant::now();
        let units = batch.len();
        let outcome = self.run_batch(batch);
        // Counted before the answers: a caller that reads the metrics once
        // answered finds its batch there.
        self.metrics.batch(units, started.elapsed().as_secs_f64());
        match outcome {
            Ok(ran) => answer_committed(&self.metrics, ran),
            Err(failure) => self.answer_failure(units, failure),
        }
    }

    fn execute(&self, sql: &str) -> rusqlite::Result<()> {
        run_cached(&self.connection, sql)
    }

    fn run_batch(&self, batch: Vec<Box<dyn ThreadJob>>) -> Result<Vec<Executed>, Failure> {
        if let Err(error) = self.execute("BEGIN IMMEDIATE") {
            return Err(Failure {
                error,
                ran: Vec::new(),
                not_run: batch,
            });
        }
        // A batch of one needs no savepoint: the transaction is the unit's.
        let several = batch.len() > 1;
        let mut ran = Vec::with_capacity(batch.len());
        let mut jobs = batch.into_iter();
        let mut all_succeeded = true;
        while let Some(job) = jobs.next() {
            let opened = if several {
                self.execute(SAVEPOINT)
            } else {
                Ok(())
            };
            if let Err(error) = opened {
                return Err(self.abandon(error, ran, std::iter::once(job).chain(jobs).collect()));
            }
            let succeeded = match job.run(&self.connection) {
                Ok(unit) => {
                    let succeeded = unit.succeeded;
                    ran.push(unit);
                    succeeded
                }
                Err(()) => {
                    tracing::error!(
                        database = %self.database,
                        "a write unit panicked; rolling it back"
                    );
                    self.metrics.unit(UnitOutcome::Failed);
                    false
                }
            };
            all_succeeded &= succeeded;
            let ended = match (several, succeeded) {
                (true, true) => self.execute(RELEASE),
                (true, false) => self
                    .execute(ROLLBACK_TO)
                    .and_then(|()| self.execute(RELEASE)),
                (false, _) => Ok(()),
            };
            if let Err(error) = ended {
                return Err(self.abandon(error, ran, jobs.collect()));
            }
        }
        let end = if several || all_succeeded {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        match self.execute(end) {
            Ok(()) => Ok(ran),
            Err(error) => Err(self.abandon(error, ran, Vec::new())),
        }
    }

    /// Rolls the open transaction back (whatever a failed statement left)
    /// and returns the failure to answer.
    fn abandon(
        &self,
        error: rusqlite::Error,
        ran: Vec<Executed>,
        not_run: Vec<Box<dyn ThreadJob>>,
    ) -> Failure {
        if !self.connection.is_autocommit() {
            if let Err(rollback) = self.execute("ROLLBACK") {
                tracing::warn!(database = %self.database, error = %rollback, "rolling back a failed batch failed");
            }
        }
        Failure {
            error,
            ran,
            not_run,
        }
    }

    fn answer_failure(&self, units: usize, failure: Failure) {
        answer_failed_batch(
            &self.database,
            &self.metrics,
            crate::storage::is_sqlite_busy(&failure.error),
            Arc::new(failure.error),
            units,
            failure.ran,
            failure.not_run,
        );
    }
}

/// Why a batch did not commit, and the units it leaves to answer.
struct Failure {
    error: rusqlite::Error,
    ran: Vec<Executed>,
    not_run: Vec<Box<dyn ThreadJob>>,
}

#[cfg(test)]
mod tests;
