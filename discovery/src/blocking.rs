//! The rules every blocking-query watch of this crate follows, in one place:
//! the index sent is the last answer's (reset when it goes backwards, never 0
//! after an answer), watches that keep returning at once are rate-limited,
//! and errors back off exponentially with jitter and restart from a plain read.

use std::{future::Future, time::Duration};

use crate::{
    backoff::{Backoff, RateLimit},
    error::ConsulError,
    health::next_index,
};

/// A watch may start this many requests back to back…
const RATE_BURST: u32 = 5;
/// …and then one per this interval (Consul asks clients to rate-limit watches
/// that keep returning at once).
const RATE_INTERVAL: Duration = Duration::from_millis(200);

/// The state of one blocking-query loop.
#[derive(Debug)]
pub(crate) struct BlockingLoop {
    backoff: Backoff,
    limit: RateLimit,
    index: u64,
}

/// One failed request: the error and how long the loop waits before the next.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: ConsulError,
    pub(crate) retry_in: Duration,
}

impl BlockingLoop {
    /// Errors back off from `min_backoff` up to `max_backoff`.
    pub(crate) fn new(min_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            backoff: Backoff::new(min_backoff, max_backoff),
            limit: RateLimit::new(RATE_BURST, RATE_INTERVAL),
            index: 0,
        }
    }

    /// Sends the next request (`fetch(index)`, 0 meaning a plain read) once the
    /// rate limit allows it. `fetch` returns the answer with its
    /// `X-Consul-Index`. After a failure the caller reports it and sleeps
    /// [`Failed::retry_in`]; the next request is a plain read (the agent may
    /// have restarted with lower indexes).
    pub(crate) async fn next<T, Fut>(&mut self, fetch: impl FnOnce(u64) -> Fut) -> Result<T, Failed>
    where
        Fut: Future<Output = Result<(u64, T), ConsulError>>,
    {
        self.limit.acquire().await;
        match fetch(self.index).await {
            Ok((returned, value)) => {
                self.backoff.reset();
                self.index = next_index(self.index, returned);
                Ok(value)
            }
            Err(error) => {
                self.index = 0;
                Err(Failed {
                    error,
                    retry_in: self.backoff.next_delay(),
                })
            }
        }
    }

    /// The index the next request sends (0: a plain read).
    #[cfg(test)]
    pub(crate) fn index(&self) -> u64 {
        self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> ConsulError {
        ConsulError::Transport {
            method: "GET".into(),
            path: "/v1/x".into(),
            message: "refused".into(),
        }
    }

    #[tokio::test]
    async fn follows_the_index_and_starts_over_after_errors() {
        let mut watch = BlockingLoop::new(Duration::from_millis(100), Duration::from_secs(1));
        let sent = watch
            .next(|index| async move { Ok((42, index)) })
            .await
            .unwrap();
        assert_eq!(sent, 0, "the first request is a plain read");
        assert_eq!(watch.index(), 42);
        let sent = watch
            .next(|index| async move { Ok((7, index)) })
            .await
            .unwrap();
        assert_eq!(sent, 42);
        assert_eq!(
            watch.index(),
            1,
            "an index that went backwards resets the watch"
        );
        let failed = watch
            .next(|_| async { Err::<(u64, ()), _>(denied()) })
            .await
            .unwrap_err();
        assert_eq!(failed.retry_in, Duration::from_millis(100));
        assert_eq!(watch.index(), 0, "after an error: a plain read");
        let second = watch
            .next(|_| async { Err::<(u64, ()), _>(denied()) })
            .await
            .unwrap_err();
        assert!(second.retry_in >= Duration::from_millis(100));
        watch.next(|_| async { Ok((0, ())) }).await.unwrap();
        assert_eq!(watch.index(), 1, "never 0 after an answer");
    }
}
