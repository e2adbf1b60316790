//! The writer task: collects a batch, runs it in one transaction with a
//! savepoint per unit, commits, then answers.

use std::{
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt as _;
use sqlx::{pool::PoolConnection, Any, AnyPool, Connection as _};
use tokio::sync::mpsc;

use super::{
    job::{Executed, Job},
    metrics::{UnitOutcome, WriterMetrics},
    GroupCommitOptions,
};

/// Each unit of a batch of several runs inside this savepoint. The three
/// statements are sent as prepared statements (`sqlx::query`), which every
/// connection caches, instead of sqlx's nested-transaction SQL, which is
/// text parsed again at every use.
const SAVEPOINT: &str = "SAVEPOINT unit";
/// Keeps a unit's changes (the savepoint ends; its changes join the batch).
const RELEASE: &str = "RELEASE SAVEPOINT unit";
/// Undoes a failed unit's changes. The savepoint stays open until the
/// batch's COMMIT: the next unit's savepoint of the same name nests inside
/// it, and RELEASE and ROLLBACK TO always name the innermost one.
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT unit";

/// The statements between a batch's units.
///
/// Each is a round trip to the database; on SQLite a round trip to the
/// connection's own thread, a hand-off and two wake-ups, which costs more
/// than the statement. So on SQLite (`folded`) the statements that meet at a
/// unit boundary go as one query — SQLite runs the statements of a query in
/// order and stops at the first that fails: `BEGIN IMMEDIATE` with the first
/// unit's `SAVEPOINT`, each unit's `RELEASE` (or `ROLLBACK TO`) with the
/// next one's `SAVEPOINT` — and the last unit's `RELEASE` is left to the
/// `COMMIT`, which releases every savepoint still open. A batch of `n`
/// units is then `n + 1` round trips beside its units' own, instead of
/// `2n + 2`. PostgreSQL's prepared statements hold one command each, so
/// there every statement goes alone.
#[derive(Debug, Clone, Copy)]
struct Boundaries {
    folded: bool,
}

/// What ends a unit: the SQL to send, if any, and whether it opens the next
/// unit's savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UnitEnd {
    sql: Option<&'static str>,
    opens_next: bool,
}

impl Boundaries {
    fn of(folded: bool) -> Self {
        Self { folded }
    }

    /// What begins a batch of one unit or `several`: on SQLite `BEGIN
    /// IMMEDIATE`, with the first unit's savepoint when there are several.
    fn begin(self, several: bool) -> &'static str {
        match (self.folded, several) {
            (true, true) => "BEGIN IMMEDIATE; SAVEPOINT unit",
            (true, false) => "BEGIN IMMEDIATE",
            (false, _) => "BEGIN",
        }
    }

    /// How a unit that `succeeded` (or not) ends, when `more` units follow.
    fn after_unit(self, succeeded: bool, more: bool) -> UnitEnd {
        let end = if succeeded { RELEASE } else { ROLLBACK_TO };
        match (self.folded, more, succeeded) {
            (true, true, true) => UnitEnd {
                sql: Some(RELEASE_AND_NEXT),
                opens_next: true,
            },
            (true, true, false) => UnitEnd {
                sql: Some(ROLLBACK_TO_AND_NEXT),
                opens_next: true,
            },
            // The COMMIT releases it.
            (true, false, true) => UnitEnd {
                sql: None,
                opens_next: false,
            },
            _ => UnitEnd {
                sql: Some(end),
                opens_next: false,
            },
        }
    }
}

/// [`RELEASE`] then the next unit's [`SAVEPOINT`] (SQLite, one query).
const RELEASE_AND_NEXT: &str = "RELEASE SAVEPOINT unit; SAVEPOINT unit";
/// [`ROLLBACK_TO`] then the next unit's [`SAVEPOINT`] (SQLite, one query).
const ROLLBACK_TO_AND_NEXT: &str = "ROLLBACK TO SAVEPOINT unit; SAVEPOINT unit";

/// A connection the writer kept that has been idle this long is tested
/// (one ping) before its next batch: a server may have closed it meanwhile.
const IDLE_BEFORE_TEST: Duration = Duration::from_secs(10);

/// One database's writer.
pub(super) struct Writer {
    database: String,
    pool: AnyPool,
    max_batch: usize,
    collect_window: Duration,
    metrics: WriterMetrics,
    /// The connection of the last batch that committed, and when it ended.
    /// The writer keeps it instead of returning it to the pool after every
    /// batch: sqlx tests a returned connection with a ping (on SQLite a
    /// round trip to the connection's own thread, on PostgreSQL one to the
    /// server), which was one such round trip per batch for nothing.
    /// (A mutex only to make the writer `Sync`: the writer task alone
    /// touches it, never across an await.)
    kept: std::sync::Mutex<Option<(PoolConnection<Any>, Instant)>>,
}

/// Why a batch did not commit, and the units it leaves to answer.
struct Failure {
    error: sqlx::Error,
    /// Units that ran (their savepoints are gone with the transaction).
    executed: Vec<Executed>,
    /// Units that never ran.
    not_run: Vec<Box<dyn Job>>,
}

impl Writer {
    pub(super) fn new(
        database: &str,
        pool: AnyPool,
        options: GroupCommitOptions,
        metrics: WriterMetrics,
    ) -> Self {
        Self {
            database: database.to_owned(),
            pool,
            max_batch: options.max_batch.max(1),
            collect_window: options.collect_window,
            metrics,
            kept: std::sync::Mutex::new(None),
        }
    }

    /// The kept connection (tested first if it has been idle a while), or
    /// one from the pool.
    async fn connection(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        let kept = self.kept().take();
        if let Some((mut connection, idle_since)) = kept {
            if idle_since.elapsed() < IDLE_BEFORE_TEST {
                return Ok(connection);
            }
            match connection.ping().await {
                Ok(()) => return Ok(connection),
                Err(error) => {
                    tracing::debug!(database = %self.database, %error, "the writer's idle connection is gone; taking another");
                    connection.close_on_drop();
                }
            }
        }
        self.pool.acquire().await
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Option<(PoolConnection<Any>, Instant)>> {
        // Nothing can panic while it is held.
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds to `batch` what the queue holds now, then — only if others were
    /// already waiting, so a lone unit is never delayed — what arrives while
    /// the scheduler runs the tasks that are about to write, for at most the
    /// collection window and only as long as units keep arriving. (Yielding
    /// instead of a timer: Tokio's timers tick in whole milliseconds.)
    async fn collect(
        &self,
        queue: &mut mpsc::Receiver<Box<dyn Job>>,
        batch: &mut Vec<Box<dyn Job>>,
    ) {
        self.take_ready(queue, batch);
        if batch.len() < 2 || self.collect_window.is_zero() {
            return;
        }
        let until = Instant::now() + self.collect_window;
        while batch.len() < self.max_batch && Instant::now() < until {
            tokio::task::yield_now().await;
            if self.take_ready(queue, batch) == 0 {
                break;
            }
        }
    }

    /// Moves the units waiting in `queue` into `batch` (up to the batch
    /// size); how many it moved.
    fn take_ready(
        &self,
        queue: &mut mpsc::Receiver<Box<dyn Job>>,
        batch: &mut Vec<Box<dyn Job>>,
    ) -> usize {
        super::intake::fill(batch, self.max_batch, || queue.try_recv().ok())
    }

    /// Runs, commits and answers one batch.
    async fn commit(&self, batch: Vec<Box<dyn Job>>) {
        let started = Instant::now();
        let units = batch.len();
        let outcome = match self.connection().await {
            Ok(connection) => {
                let mut guard = ClosedIfPanicking::new(connection);
                let outcome = self.run_batch(guard.connection(), batch).await;
                let mut connection = guard.into_inner();
                if outcome.is_ok() {
                    // Kept for the next batch (the transaction is over).
                    *self.kept() = Some((connection, Instant::now()));
                } else {
                    // Whatever state a failed batch left, it is not reused.
                    connection.close_on_drop();
                }
                outcome
            }
            Err(error) => Err(Failure {
                error,
                executed: Vec::new(),
                not_run: batch,
            }),
        };
        // Counted before the answers: a caller that reads the metrics once
        // answered finds its batch there.
        self.metrics.batch(units, started.elapsed().as_secs_f64());
        match outcome {
            Ok(executed) => super::job::answer_committed(&self.metrics, executed),
            Err(failure) => self.answer_failure(units, failure),
        }
    }

    async fn run_batch(
        &self,
        connection: &mut PoolConnection<Any>,
        batch: Vec<Box<dyn Job>>,
    ) -> Result<Vec<Executed>, Failure> {
        // SQLite: take the write lock at BEGIN, so a unit that reads before it
        // writes never has to upgrade its lock (SQLITE_BUSY without waiting).
        // A batch of several units there opens the first unit's savepoint in
        // the same round trip (see [`Boundaries`]).
        let boundaries = Boundaries::of(connection.backend_name() == "SQLite");
        let several = batch.len() > 1;
        let mut transaction = match connection.begin_with(boundaries.begin(several)).await {
            Ok(transaction) => transaction,
            Err(error) => {
                return Err(Failure {
                    error,
                    executed: Vec::new(),
                    not_run: batch,
                })
            }
        };
        if !several {
            return self.run_alone(transaction, batch).await;
        }
        let mut executed = Vec::with_capacity(batch.len());
        let mut jobs = batch.into_iter().peekable();
        let mut savepoint_open = boundaries.folded;
        while let Some(job) = jobs.next() {
            if !savepoint_open {
                if let Err(error) = sqlx::query(SAVEPOINT).execute(&mut *transaction).await {
                    let not_run = std::iter::once(job).chain(jobs).collect();
                    return Err(Failure {
                        error,
                        executed,
                        not_run,
                    });
                }
            }
            let ran = AssertUnwindSafe(async { job.run(&mut transaction).await })
                .catch_unwind()
                .await;
            let succeeded = match ran.as_ref().map(|unit| unit.succeeded) {
                Ok(succeeded) => succeeded,
                Err(_) => {
                    tracing::error!(
                        database = %self.database,
                        "a write unit panicked; rolling back its savepoint"
                    );
                    self.metrics.unit(UnitOutcome::Failed);
                    false
                }
            };
            let end = boundaries.after_unit(succeeded, jobs.peek().is_some());
            savepoint_open = end.opens_next;
            let ended = match end.sql {
                Some(sql) => sqlx::query(sql).execute(&mut *transaction).await.map(drop),
                None => Ok(()),
            };
            if let Ok(unit) = ran {
                executed.push(unit);
            }
            if let Err(error) = ended {
                return Err(Failure {
                    error,
                    executed,
                    not_run: jobs.collect(),
                });
            }
        }
        match transaction.commit().await {
            Ok(()) => Ok(executed),
            Err(error) => Err(Failure {
                error,
                executed,
                not_run: Vec::new(),
            }),
        }
    }

    /// A batch of one unit needs no savepoint: the transaction is the
    /// unit's, so a unit that fails (or panics) is undone by rolling the
    /// transaction back — two statements fewer per write when requests do
    /// not overlap.
    async fn run_alone(
        &self,
        mut transaction: sqlx::Transaction<'_, Any>,
        batch: Vec<Box<dyn Job>>,
    ) -> Result<Vec<Executed>, Failure> {
        let mut executed = Vec::with_capacity(1);
        for job in batch {
            let ran = AssertUnwindSafe(async { job.run(&mut transaction).await })
                .catch_unwind()
                .await;
            match ran {
                Ok(unit) => executed.push(unit),
                Err(_) => {
                    tracing::error!(
                        database = %self.database,
                        "a write unit panicked; rolling its transaction back"
                    );
                    self.metrics.unit(UnitOutcome::Failed);
                }
            }
        }
        let ended = if executed.iter().all(|unit| unit.succeeded) && !executed.is_empty() {
            transaction.commit().await
        } else {
            transaction.rollback().await
        };
        match ended {
            Ok(()) => Ok(executed),
            Err(error) => Err(Failure {
                error,
                executed,
                not_run: Vec::new(),
            }),
        }
    }

    fn answer_failure(&self, units: usize, failure: Failure) {
        super::job::answer_failed_batch(
            &self.database,
            &self.metrics,
            super::super::is_transient(&failure.error),
            Arc::new(failure.error),
            units,
            failure.executed,
            failure.not_run,
        );
    }
}

/// A batch's connection that is closed, not returned to the pool, when a
/// panic unwinds through the batch (it may be inside a transaction).
struct ClosedIfPanicking(Option<PoolConnection<Any>>);

impl ClosedIfPanicking {
    fn new(connection: PoolConnection<Any>) -> Self {
        Self(Some(connection))
    }

    fn connection(&mut self) -> &mut PoolConnection<Any> {
        self.0
            .as_mut()
            .expect("the connection is there until into_inner takes it")
    }

    /// The connection, past the point where a panic could unwind.
    fn into_inner(mut self) -> PoolConnection<Any> {
        self.0
            .take()
            .expect("the connection is there until into_inner takes it")
    }
}

impl Drop for ClosedIfPanicking {
    fn drop(&mut self) {
        if let (true, Some(connection)) = (std::thread::panicking(), self.0.as_mut()) {
            connection.close_on_drop();
        }
    }
}

/// Serves `queue` until every [`super::GroupCommit`] handle is dropped and
/// the units queued before are answered.
///
/// A panic outside a write unit (collecting, BEGIN, COMMIT, answering) ends
/// only the batch it hit, never the writer: the batch's callers whose answer
/// was not sent yet get [`WriteError::Panicked`] (their reply channel is
/// dropped), the panic is logged (those units count as `failed`), and the writer serves the next
/// batch on a fresh connection (docs/adr/0019-*). Without this the task died
/// and the instance ran on, unable to write.
pub(super) async fn run(writer: Writer, mut queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(writer.max_batch);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        let cycle = AssertUnwindSafe(async {
            writer.collect(&mut queue, &mut batch).await;
            writer.metrics.dequeued(batch.len());
            writer.commit(std::mem::take(&mut batch)).await;
        })
        .catch_unwind()
        .await;
        if let Err(panic) = cycle {
            let unanswered = batch.len();
            // Dropping the units drops their reply channels: their callers
            // get WriteError::Panicked instead of waiting for ever.
            batch.clear();
            for _ in 0..unanswered {
                writer.metrics.unit(UnitOutcome::Failed);
            }
            tracing::error!(
                database = %writer.database,
                unanswered,
                panic = %panic_message(panic.as_ref()),
                "the database writer panicked outside a write unit; the batch's callers get an \
                 error and the writer goes on with the next batch"
            );
        }
    }
}

/// The panic's message, bounded (it may carry anything).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    const LIMIT: usize = 256;
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-text panic payload");
    message.chars().take(LIMIT).collect()
}

#[cfg(test)]
mod boundary_tests {
    use super::*;

    #[test]
    fn on_sqlite_a_units_end_opens_the_next_ones_savepoint_and_the_commit_ends_the_last() {
        let sqlite = Boundaries::of(true);
        let next = |sql| UnitEnd {
            sql: Some(sql),
            opens_next: true,
        };
        assert_eq!(sqlite.after_unit(true, true), next(RELEASE_AND_NEXT));
        assert_eq!(sqlite.after_unit(false, true), next(ROLLBACK_TO_AND_NEXT));
        let last_ok = UnitEnd {
            sql: None,
            opens_next: false,
        };
        assert_eq!(sqlite.after_unit(true, false), last_ok);
        let last_failed = UnitEnd {
            sql: Some(ROLLBACK_TO),
            opens_next: false,
        };
        assert_eq!(sqlite.after_unit(false, false), last_failed);
    }

    #[test]
    fn a_batch_begins_with_its_first_savepoint_only_on_sqlite_and_only_when_it_has_several_units() {
        assert_eq!(
            Boundaries::of(true).begin(true),
            "BEGIN IMMEDIATE; SAVEPOINT unit"
        );
        assert_eq!(Boundaries::of(true).begin(false), "BEGIN IMMEDIATE");
        assert_eq!(Boundaries::of(false).begin(true), "BEGIN");
        assert_eq!(Boundaries::of(false).begin(false), "BEGIN");
    }

    #[test]
    fn elsewhere_every_boundary_statement_goes_alone() {
        let postgres = Boundaries::of(false);
        for more in [true, false] {
            assert_eq!(
                postgres.after_unit(true, more),
                UnitEnd {
                    sql: Some(RELEASE),
                    opens_next: false
                }
            );
            assert_eq!(
                postgres.after_unit(false, more),
                UnitEnd {
                    sql: Some(ROLLBACK_TO),
                    opens_next: false
                }
            );
        }
    }
}
