//! The relay: on every orders instance, publishes pending outbox rows and
//! marks them once the broker confirmed them.
//!
//! - It wakes when a transaction that recorded an event commits (no polling
//!   delay on the happy path), and every `sweep_every` for anything left
//!   behind (another instance's rows, a failed publish, a relay that died).
//! - It takes an order's lease before publishing its events and publishes
//!   them in sequence, stopping at the first failure: relays never publish
//!   one order's events at the same time, and a later event never leaves
//!   before an earlier one. A relay that dies between the broker's
//!   confirmation and the mark publishes the event again after the lease
//!   expires: consumers deduplicate on the event id.
//! - While the broker is down, rows wait; placing orders never waits for it.

use std::{sync::Arc, time::Duration};

use events::{Broker, BrokerError, EventBroker};
use futures::StreamExt;
use mesh::storage::now_unix_ms;

use super::{
    metrics::OutboxMetrics,
    table::{Outcome, Table},
    Wake, TOPIC,
};

/// How the relay paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOptions {
    /// How often it looks for pending rows without being woken.
    pub sweep_every: Duration,
    /// Orders looked at per round.
    pub batch: i64,
    /// Orders published at the same time.
    pub concurrency: usize,
    /// How long published rows are kept (for people to look at).
    pub keep_published: Duration,
    /// How often the broker's retention is applied and old rows pruned.
    pub maintain_every: Duration,
    /// Test-only fault injection: wait this long after reading a row and
    /// before publishing it (the fault campaign kills the process there).
    pub pause_before_publish: Option<Duration>,
    /// Test-only fault injection: wait this long after the broker's
    /// confirmation and before marking the row.
    pub pause_after_publish: Option<Duration>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            sweep_every: Duration::from_secs(1),
            batch: 64,
            concurrency: 8,
            keep_published: Duration::from_secs(24 * 3600),
            maintain_every: Duration::from_secs(60),
            pause_before_publish: None,
            pause_after_publish: None,
        }
    }
}

/// A relay for one orders instance.
#[derive(Debug, Clone)]
pub struct Relay {
    table: Table,
    wake: Wake,
    options: RelayOptions,
    metrics: Arc<OutboxMetrics>,
}

/// What publishing one order's events gave.
enum Published {
    /// Every pending event of the order is out.
    All,
    /// Another relay holds the order.
    Busy,
    /// The broker failed; the rest waits.
    Failed(BrokerError),
}

impl Relay {
    /// A relay over `table`, woken by `wake` and leasing as its owner for
    /// its lease.
    pub fn new(table: Table, wake: Wake, options: RelayOptions) -> Self {
        Self {
            table,
            wake,
            options,
            metrics: OutboxMetrics::registered(),
        }
    }

    /// Runs until aborted: publishes to the broker `locate` finds (retrying
    /// while there is none).
    pub async fn run<F, Fut>(self, locate: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Broker, BrokerError>>,
    {
        let statistics = tokio::spawn(self.clone().watch_backlog());
        let _stop_statistics = AbortOnDrop(statistics);
        let mut pause = Duration::from_millis(200);
        let broker = loop {
            match locate().await {
                Ok(broker) => break broker,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?pause, "no broker to publish to yet; events wait in the outbox");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        };
        tracing::info!(broker = %broker.kind(), "publishing the outbox");
        self.publish_forever(&broker).await;
    }

    async fn publish_forever(&self, broker: &Broker) {
        let mut sweep = tokio::time::interval(self.options.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintain = tokio::time::interval(self.options.maintain_every);
        maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::ZERO;
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                _ = sweep.tick() => {}
                _ = maintain.tick() => self.maintain(broker).await,
            }
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
            backoff = match self.drain(broker).await {
                Ok(()) => Duration::ZERO,
                Err(error) => {
                    let next =
                        (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(2));
                    tracing::warn!(%error, retry_in = ?next, "the broker did not take the outbox's events; they wait");
                    next
                }
            };
        }
    }

    /// Publishes every pending event it can lease; an error when the broker
    /// failed every order it tried.
    async fn drain(&self, broker: &Broker) -> Result<(), BrokerError> {
        loop {
            let orders = self
                .table
                .pending_orders(self.options.batch)
                .await
                .map_err(|error| {
                    BrokerError::NotConfigured(format!("reading the outbox: {error}"))
                })?;
            if orders.is_empty() {
                return Ok(());
            }
            let results: Vec<Published> = futures::stream::iter(orders)
                .map(|order_id| async move { self.publish_order(broker, &order_id).await })
                .buffer_unordered(self.options.concurrency)
                .collect()
                .await;
            let progressed = results
                .iter()
                .any(|result| matches!(result, Published::All));
            let failure = results.into_iter().find_map(|result| match result {
                Published::Failed(error) => Some(error),
                _ => None,
            });
            match (progressed, failure) {
                (_, Some(error)) if !progressed => return Err(error),
                // Everything left is leased by other relays.
                (false, None) => return Ok(()),
                _ => {}
            }
        }
    }

    async fn publish_order(&self, broker: &Broker, order_id: &str) -> Published {
        let started = std::time::Instant::now();
        let now = now_unix_ms();
        let owner = self.wake.owner();
        // A lease the committing unit took for this relay needs no write of
        // its own while it has at least half its time left.
        let handed = self
            .wake
            .take_handed(order_id)
            .is_some_and(|until| until - now > self.wake.lease_ms() / 2);
        if !handed {
            match self
                .table
                .lease(order_id, owner, now, now + self.wake.lease_ms())
                .await
            {
                Ok(true) => {}
                Ok(false) => return Published::Busy,
                Err(error) => {
                    tracing::warn!(%order_id, %error, "cannot lease the order's events");
                    return Published::Busy;
                }
            }
        }
        let leased = started.elapsed();
        let (published, outcome) = self.publish_leased(broker, order_id).await;
        let sent = started.elapsed();
        // The marks and the release: one write unit, sharing the writer's
        // commit with whatever else is queued.
        if let Err(error) = self
            .table
            .finish(order_id, owner, outcome, now_unix_ms())
            .await
        {
            // Published but not marked: it goes out again after the lease
            // expires (a duplicate consumers drop).
            tracing::warn!(%order_id, %error, "cannot mark the order's published events; they will go out again");
            return Published::Busy;
        }
        tracing::debug!(
            %order_id,
            handed,
            lease_us = leased.as_micros(),
            read_and_publish_us = (sent - leased).as_micros(),
            mark_and_release_us = (started.elapsed() - sent).as_micros(),
            "relay phases"
        );
        published
    }

    /// Publishes the leased order's pending events in sequence, stopping at
    /// the first failure; what it gave, and what to record of it.
    async fn publish_leased(&self, broker: &Broker, order_id: &str) -> (Published, Outcome) {
        let mut outcome = Outcome::default();
        let pending = match self.table.pending_of(order_id).await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%order_id, %error, "cannot read the order's events");
                return (Published::Busy, outcome);
            }
        };
        for row in pending {
            if let Some(pause) = self.options.pause_before_publish {
                tracing::warn!(event_id = %row.event_id, ?pause, "fault injection: committed, pausing before the publish");
                tokio::time::sleep(pause).await;
            }
            let waited_ms = now_unix_ms() - row.created_at_unix_ms;
            let publishing = std::time::Instant::now();
            if let Err(error) = broker.publish(TOPIC, &row.to_event()).await {
                self.metrics.publish_error();
                outcome.failed = Some((row.event_id, error.to_string()));
                return (Published::Failed(error), outcome);
            }
            let publish_us = publishing.elapsed().as_micros();
            if let Some(pause) = self.options.pause_after_publish {
                tracing::warn!(event_id = %row.event_id, ?pause, "fault injection: published, pausing before the mark");
                tokio::time::sleep(pause).await;
            }
            self.metrics.published();
            tracing::debug!(%order_id, sequence = row.sequence, event_id = %row.event_id, waited_ms, publish_us, "event published");
            outcome.confirmed.push(row.event_id);
        }
        (Published::All, outcome)
    }

    async fn maintain(&self, broker: &Broker) {
        if let Err(error) = broker.maintain(TOPIC).await {
            tracing::debug!(%error, "cannot apply the broker's retention now");
        }
        let now = now_unix_ms();
        self.wake.forget_ended(now);
        let keep = i64::try_from(self.options.keep_published.as_millis()).unwrap_or(i64::MAX / 2);
        match self.table.prune(now - keep, now).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "forgot published outbox rows"),
            Err(error) => tracing::warn!(%error, "cannot prune the outbox"),
        }
    }

    /// Keeps the pending count and the oldest pending row's time current for
    /// the metrics.
    async fn watch_backlog(self) {
        let mut ticks = tokio::time::interval(self.options.sweep_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.table.backlog().await {
                Ok((pending, oldest)) => self.metrics.backlog(pending, oldest),
                Err(error) => tracing::debug!(%error, "cannot count the outbox"),
            }
        }
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
