//! A caller's write unit with its reply channel, its type erased so that one
//! queue carries units of every result type.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::AnyConnection;
use tokio::sync::oneshot;

use super::{
    metrics::{UnitOutcome, WriterMetrics},
    WriteError,
};

/// What a unit did inside its savepoint, and how to answer its caller once
/// the batch's COMMIT has returned.
pub(super) struct Executed {
    /// Whether the unit succeeded (its savepoint is kept) or failed (rolled back).
    pub(super) succeeded: bool,
    /// Sends the caller its answer; called after COMMIT, with its outcome.
    pub(super) answer: Box<dyn Answer>,
}

/// Answers a caller whose unit was executed.
pub(super) trait Answer: Send {
    /// With `Ok` the unit's own result goes to the caller; with the batch's
    /// error, that error (the unit's changes, and what it read, are gone).
    fn send(self: Box<Self>, commit: Result<(), &WriteError>);
}

/// A queued unit that can be answered without running.
pub(super) trait Fail: Send {
    /// Answers the caller with `error` without running the unit.
    fn fail(self: Box<Self>, error: &WriteError);
}

/// A queued unit of the async writer.
pub(super) trait Job: Fail {
    /// Runs the unit on the batch's connection (inside its savepoint).
    fn run<'c>(self: Box<Self>, connection: &'c mut AnyConnection) -> BoxFuture<'c, Executed>;
}

/// Answers every unit of a batch that committed: a unit that failed was
/// rolled back to its savepoint alone, and gets its own error.
pub(super) fn answer_committed(metrics: &WriterMetrics, executed: Vec<Executed>) {
    for unit in executed {
        metrics.unit(if unit.succeeded {
            UnitOutcome::Committed
        } else {
            UnitOutcome::RolledBack
        });
        unit.answer.send(Ok(()));
    }
}

/// Answers every unit of a batch that did not commit with the batch's
/// error (`source`, worth a retry if `transient`), logged once: the units
/// that ran (their changes are gone with the transaction) and those that
/// never did.
pub(super) fn answer_failed_batch<J: Fail + ?Sized>(
    database: &str,
    metrics: &WriterMetrics,
    transient: bool,
    source: Arc<dyn std::error::Error + Send + Sync>,
    units: usize,
    executed: Vec<Executed>,
    not_run: Vec<Box<J>>,
) {
    tracing::warn!(
        database,
        units,
        error = %source,
        "a batch of writes did not commit; its callers get the error"
    );
    let error = WriteError::Batch {
        database: database.to_owned(),
        units,
        transient,
        source,
    };
    for unit in executed {
        metrics.unit(UnitOutcome::Failed);
        unit.answer.send(Err(&error));
    }
    for job in not_run {
        metrics.unit(UnitOutcome::Failed);
        job.fail(&error);
    }
}

/// A unit with a result of type `Result<T, E>`: an async closure over
/// sqlx's connection ([`Job`]) or a closure over SQLite's on the writer
/// thread (`thread::ThreadJob`).
pub(super) struct TypedJob<F, T, E> {
    unit: F,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> TypedJob<F, T, E> {
    /// `unit`, answered on `reply`.
    pub(super) fn new(unit: F, reply: oneshot::Sender<Result<T, E>>) -> Self {
        Self { unit, reply }
    }

    /// The unit and its reply channel.
    pub(super) fn into_parts(self) -> (F, oneshot::Sender<Result<T, E>>) {
        (self.unit, self.reply)
    }
}

impl<F, T, E> Job for TypedJob<F, T, E>
where
    F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<WriteError> + Send + 'static,
{
    fn run<'c>(self: Box<Self>, connection: &'c mut AnyConnection) -> BoxFuture<'c, Executed> {
        let TypedJob { unit, reply } = *self;
        let running = unit(connection);
        Box::pin(async move {
            let result = running.await;
            Executed {
                succeeded: result.is_ok(),
                answer: Box::new(TypedAnswer::new(result, reply)),
            }
        })
    }
}

impl<F, T, E> Fail for TypedJob<F, T, E>
where
    F: Send,
    T: Send + 'static,
    E: From<WriteError> + Send + 'static,
{
    fn fail(self: Box<Self>, error: &WriteError) {
        // The caller may have gone (its RPC was cancelled): nothing to answer.
        let _ = self.reply.send(Err(E::from(error.clone())));
    }
}

/// A unit's own result, sent to its caller after COMMIT (or replaced by the
/// batch's error).
pub(super) struct TypedAnswer<T, E> {
    result: Result<T, E>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E> TypedAnswer<T, E> {
    /// `result`, to be sent on `reply`.
    pub(super) fn new(result: Result<T, E>, reply: oneshot::Sender<Result<T, E>>) -> Self {
        Self { result, reply }
    }
}

impl<T, E> Answer for TypedAnswer<T, E>
where
    T: Send + 'static,
    E: From<WriteError> + Send + 'static,
{
    fn send(self: Box<Self>, commit: Result<(), &WriteError>) {
        let answer = match commit {
            Ok(()) => self.result,
            Err(error) => Err(E::from(error.clone())),
        };
        let _ = self.reply.send(answer);
    }
}
