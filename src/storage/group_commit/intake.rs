//! The callers' side that both writers share: handing a unit to the queue
//! (counted, and refused with the right error when the queue is full or the
//! writer has stopped), and waiting for its answer.

use tokio::sync::oneshot;

use super::{
    metrics::{UnitOutcome, WriterMetrics},
    WriteError,
};

/// A writer's queue as its callers see it.
#[derive(Debug)]
pub(super) struct Intake {
    /// The database (service) name, for errors.
    pub(super) database: String,
    /// The queue's capacity.
    pub(super) capacity: usize,
    /// The writer's metrics.
    pub(super) metrics: WriterMetrics,
}

/// Why the queue did not take a unit.
pub(super) enum Refusal {
    /// It holds its capacity already.
    Full,
    /// The writer has stopped.
    Stopped,
}

impl Intake {
    /// Hands a unit over with `send`, counting it in the queue's depth or
    /// as refused.
    pub(super) fn hand_over(
        &self,
        send: impl FnOnce() -> Result<(), Refusal>,
    ) -> Result<(), WriteError> {
        self.metrics.queued();
        send().map_err(|refusal| {
            self.metrics.dequeued(1);
            self.metrics.unit(UnitOutcome::Refused);
            match refusal {
                Refusal::Full => WriteError::QueueFull {
                    database: self.database.clone(),
                    capacity: self.capacity,
                },
                Refusal::Stopped => WriteError::Stopped {
                    database: self.database.clone(),
                },
            }
        })
    }

    /// The caller's wait for a unit that was `queued` (or refused): its
    /// answer, or [`WriteError::Panicked`] if the unit panicked (its reply
    /// was dropped unsent).
    pub(super) fn answer<T, E>(
        &self,
        queued: Result<(), WriteError>,
        answer: oneshot::Receiver<Result<T, E>>,
    ) -> impl std::future::Future<Output = Result<T, E>> + Send + 'static
    where
        T: Send + 'static,
        E: From<WriteError> + Send + 'static,
    {
        let database = self.database.clone();
        async move {
            queued.map_err(E::from)?;
            match answer.await {
                Ok(result) => result,
                Err(_) => Err(E::from(WriteError::Panicked { database })),
            }
        }
    }
}

/// Moves units from `next` into `batch` until it holds `max` or `next` has
/// none ready; how many it moved.
pub(super) fn fill<J>(
    batch: &mut Vec<J>,
    max: usize,
    mut next: impl FnMut() -> Option<J>,
) -> usize {
    let before = batch.len();
    while batch.len() < max {
        match next() {
            Some(job) => batch.push(job),
            None => break,
        }
    }
    batch.len() - before
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn a_batch_is_filled_up_to_its_bound_or_until_nothing_is_ready() {
        let mut ready = vec![1, 2, 3, 4, 5].into_iter();
        let mut batch = vec![0];
        assert_eq!(fill(&mut batch, 3, || ready.next()), 2);
        assert_eq!(batch, vec![0, 1, 2]);
        assert_eq!(fill(&mut batch, 10, || ready.next()), 3);
        assert_eq!(batch, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(fill(&mut batch, 10, || ready.next()), 0);
    }
}
