//! Connections of the mesh port that have not authenticated yet (from the
//! accept to a completed TLS handshake): at most `--max-pending-handshakes`
//! at once, each for at most `--handshake-timeout`.
//!
//! At the cap, a newcomer is let in and the *oldest* waiting connection is
//! dropped: a flood of silent sockets then holds each slot only until
//! newer sockets push it out, while a real client, whose handshake takes a
//! round trip or two, completes long before it is the oldest. Refusing
//! newcomers instead would let the flood lock every real client out for a
//! whole timeout.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::oneshot;

use super::metrics;

/// The mesh port's limits on unauthenticated connections.
#[derive(Debug, Clone)]
pub(crate) struct Handshakes {
    timeout: Duration,
    max_pending: usize,
    pending: Arc<Mutex<Pending>>,
}

#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    /// By age (ids grow); dropping a sender tells its connection to give up.
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Pending {
    fn remove(&mut self, id: u64) {
        if self.waiting.remove(&id).is_some() {
            metrics::pending_handshake_done();
        }
    }
}

impl Handshakes {
    /// At most `max_pending` (at least 1) connections waiting, each at most `timeout`.
    pub(crate) fn new(timeout: Duration, max_pending: usize) -> Self {
        Self {
            timeout,
            max_pending: max_pending.max(1),
            pending: Arc::default(),
        }
    }

    /// The longest a connection may take from its accept to a completed handshake.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A just-accepted connection starts waiting; beyond the cap, the oldest
    /// waiting one is told to give up ([`PendingSlot::evicted`]).
    pub(crate) fn enter(&self) -> PendingSlot {
        let mut pending = self.lock();
        let id = pending.next_id;
        pending.next_id += 1;
        let (sender, evicted) = oneshot::channel();
        pending.waiting.insert(id, sender);
        metrics::pending_handshake_started();
        while pending.waiting.len() > self.max_pending {
            if let Some((oldest, _)) = pending.waiting.first_key_value() {
                let oldest = *oldest;
                pending.remove(oldest);
            }
        }
        PendingSlot {
            id,
            pending: self.pending.clone(),
            evicted,
            gone: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

/// A connection's place among the pending handshakes, given up on drop.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    id: u64,
    pending: Arc<Mutex<Pending>>,
    evicted: oneshot::Receiver<()>,
    gone: bool,
}

impl PendingSlot {
    /// Resolves once newer connections pushed this one out (and at once
    /// after that). Cancel-safe.
    pub(crate) async fn evicted(&mut self) {
        if !self.gone {
            let _ = (&mut self.evicted).await;
            self.gone = true;
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    #[tokio::test]
    async fn the_oldest_waiting_connection_makes_room_for_a_newcomer() {
        let handshakes = Handshakes::new(Duration::from_secs(1), 2);
        let mut first = handshakes.enter();
        let mut second = handshakes.enter();
        assert_eq!(handshakes.waiting(), 2);
        assert!(first.evicted().now_or_never().is_none());

        let mut third = handshakes.enter();
        assert_eq!(handshakes.waiting(), 2, "the cap holds");
        assert!(first.evicted().now_or_never().is_some(), "the oldest goes");
        assert!(second.evicted().now_or_never().is_none());
        assert!(third.evicted().now_or_never().is_none());

        // A finished handshake frees its place: nobody is pushed out.
        drop(second);
        assert_eq!(handshakes.waiting(), 1);
        let mut fourth = handshakes.enter();
        assert!(third.evicted().now_or_never().is_none());
        assert!(fourth.evicted().now_or_never().is_none());
        drop(first);
        assert_eq!(handshakes.waiting(), 2);
    }
}
