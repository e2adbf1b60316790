//! A caller's write unit with its reply channel, its type erased so that one
//! queue carries units of every result type.

use futures::future::BoxFuture;
use sqlx::AnyConnection;
use tokio::sync::oneshot;

use super::WriteError;

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

/// A queued unit.
pub(super) trait Job: Send {
    /// Runs the unit on the batch's connection (inside its savepoint).
    fn run<'c>(self: Box<Self>, connection: &'c mut AnyConnection) -> BoxFuture<'c, Executed>;

    /// Answers the caller with `error` without running the unit.
    fn fail(self: Box<Self>, error: &WriteError);
}

/// A unit with a result of type `Result<T, E>`.
pub(super) struct TypedJob<F, T, E> {
    unit: F,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> TypedJob<F, T, E> {
    /// `unit`, answered on `reply`.
    pub(super) fn new(unit: F, reply: oneshot::Sender<Result<T, E>>) -> Self {
        Self { unit, reply }
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
