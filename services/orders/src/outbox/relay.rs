//! The relay: on every orders instance, publishes pending outbox rows and
//! removes them once the broker confirmed them (the broker holds them
//! from then on: the outbox holds pending events only).
//!
//! - It wakes when a transaction that recorded an event commits (no polling
//!   delay on the happy path), and every `sweep_every` for anything left
//!   behind (another instance's rows, a failed publish, a relay that died).
//! - On the happy path it publishes the events the committing units handed
//!   over in memory with their leases (`Wake::take_ready`), with no read of
//!   the outbox; it reads the outbox on the sweep, after a failure, and when
//!   a commit's event could not be handed over whole (`Wake::notify_read`).
//! - It takes an order's lease before publishing its events and publishes
//!   them in sequence, stopping at the first failure: relays never publish
//!   one order's events at the same time, and a later event never leaves
//!   before an earlier one. A relay that dies between the broker's
//!   confirmation and the removal publishes the event again after the lease
//!   expires: consumers deduplicate on the event id.
//! - While the broker is down, rows wait; placing orders never waits for it.

use std::{sync::Arc, time::Duration};

use events::{Broker, BrokerError, EventBroker};
use mesh::storage::now_unix_ms;

use super::{
    metrics::OutboxMetrics,
    table::{Outcome, Pending, Table},
    Wake, TOPIC,
};
use crate::store::StoreError;

/// How the relay paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOptions {
    /// How often it looks for pending rows without being woken.
    pub sweep_every: Duration,
    /// Orders looked at per round.
    pub batch: i64,
    /// After a round that published something, the relay lets commits
    /// gather this long per event it published before it reads again, up
    /// to [`RelayOptions::gather`]: a round's statements, wake-ups and
    /// broker round trips are per round, not per event, so under load the
    /// rounds grow (and cost less per event) while a light load, whose
    /// rounds carry an event or two, waits a few milliseconds; an idle
    /// relay woken by a commit reads at once. A round that publishes `n`
    /// events at a rate of `r` events per millisecond waits `k·n` and so
    /// carries `n = r·(k·n + t)` (`t` the round's own time): the rounds
    /// reach the cap once `r ≥ 1/k`, so `k` is chosen to put that rate
    /// (250 events/s at 4 ms) well below saturation, where `n` would
    /// otherwise swing with small changes of the rate.
    pub gather_per_event: Duration,
    /// The longest gather, whatever the last round carried: the most
    /// latency batching adds to an event.
    pub gather: Duration,
    /// How long rows that an earlier version marked published (it kept
    /// them for people to look at) stay before the prune removes them.
    pub keep_published: Duration,
    /// How often the broker's retention is applied and old rows pruned.
    pub maintain_every: Duration,
    /// Test-only fault injection: wait this long after reading a row and
    /// before publishing it (the fault campaign kills the process there).
    pub pause_before_publish: Option<Duration>,
    /// Test-only fault injection: wait this long after the broker's
    /// confirmation and before removing the row.
    pub pause_after_publish: Option<Duration>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            sweep_every: Duration::from_secs(1),
            batch: 64,
            gather_per_event: Duration::from_millis(4),
            gather: Duration::from_millis(80),
            keep_published: Duration::from_secs(24 * 3600),
            maintain_every: Duration::from_secs(60),
            pause_before_publish: None,
            pause_after_publish: None,
        }
    }
}

impl RelayOptions {
    /// How long to let commits gather after a round that published
    /// `published` events: [`RelayOptions::gather_per_event`] each, at most
    /// [`RelayOptions::gather`].
    fn gather_after(&self, published: usize) -> Duration {
        let published = u32::try_from(published).unwrap_or(u32::MAX);
        self.gather_per_event
            .checked_mul(published)
            .map_or(self.gather, |gather| gather.min(self.gather))
    }

    /// How long to wait before the next read after a round that published
    /// `published` events and whose read found `full` a whole batch: a
    /// full batch reads again at once (more may be waiting, so the relay
    /// keeps up with any rate and gathers only once it has caught up),
    /// otherwise [`RelayOptions::gather_after`].
    fn pause_after(&self, published: usize, full: bool) -> Duration {
        if full {
            Duration::ZERO
        } else {
            self.gather_after(published)
        }
    }
}

/// Why a round or a drain stopped.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    /// The outbox could not be read (the events wait in it).
    #[error("reading the outbox: {0}")]
    Read(#[from] StoreError),
    /// The broker took none of the events tried.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A relay for one orders instance.
#[derive(Debug, Clone)]
pub struct Relay {
    table: Table,
    wake: Wake,
    options: RelayOptions,
    metrics: Arc<OutboxMetrics>,
}

/// What one round over a batch gave.
#[derive(Debug, Default)]
struct Round {
    /// Some order had all its pending events published.
    progressed: bool,
    /// Events the broker confirmed.
    published: usize,
    /// The read found a whole batch of orders: more may be waiting now.
    full: bool,
    /// The first failure the broker gave.
    failure: Option<BrokerError>,
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
            // Whether this drain reads the outbox: on the sweep, after a
            // failure, or when a commit asks for it (`Wake::notify_read`);
            // otherwise it publishes what the committing units handed over.
            let mut read = !backoff.is_zero();
            tokio::select! {
                () = self.wake.notified() => {}
                _ = sweep.tick() => read = true,
                _ = maintain.tick() => {
                    self.maintain(broker).await;
                    read = true;
                }
            }
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
            backoff = match self.drain(broker, read).await {
                Ok(()) => Duration::ZERO,
                Err(error) => {
                    let next =
                        (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(2));
                    match &error {
                        RelayError::Read(_) => {
                            tracing::warn!(%error, retry_in = ?next, "cannot read the outbox; its events wait");
                        }
                        RelayError::Broker(_) => {
                            tracing::warn!(%error, retry_in = ?next, "the broker did not take the outbox's events; they wait");
                        }
                    }
                    next
                }
            };
        }
    }

    /// Publishes what is pending: a read round of the outbox first when
    /// `read` (or a commit asks for one meanwhile), again while a read finds
    /// a whole batch, then the events handed over in memory; an error when
    /// the outbox could not be read or the broker failed every order it
    /// tried. A read is served before the next hand-off, so a steady stream
    /// of hand-offs never keeps the relay from the events only the outbox
    /// has (a later event handed without its first, another relay's).
    async fn drain(&self, broker: &Broker, mut read: bool) -> Result<(), RelayError> {
        let batch = usize::try_from(self.options.batch).unwrap_or(1).max(1);
        loop {
            read |= self.wake.take_read_needed();
            let round = if read {
                let round = self.round(broker).await?;
                if !round.progressed && round.failure.is_none() {
                    // Nothing in the outbox this relay can take now.
                    read = false;
                    continue;
                }
                // A whole batch: more may be waiting in the outbox.
                read = round.full;
                round
            } else {
                let handed = self.wake.take_ready(batch, now_unix_ms());
                if handed.is_empty() {
                    return Ok(());
                }
                let full = handed.len() >= batch;
                let round = self.publish_handed(broker, handed, full).await;
                // A failed order's events wait in the outbox: read them.
                read = round.failure.is_some();
                round
            };
            match (round.progressed, round.failure) {
                (false, Some(error)) => return Err(error.into()),
                // The removal failed: the events go out again later.
                (false, None) => return Ok(()),
                _ => {}
            }
            let gather = self.options.pause_after(round.published, round.full);
            if !gather.is_zero() {
                tokio::time::sleep(gather).await;
            }
        }
    }

    /// One round over a batch of orders: one read of their pending events,
    /// one lease statement for the orders no committing unit handed over,
    /// their publishes in waves (one exchange with the broker per wave: the
    /// next event of every order, so each order's events leave one at a
    /// time in sequence; usually one wave), and one write unit removing what
    /// the broker confirmed and releasing the leases.
    async fn round(&self, broker: &Broker) -> Result<Round, RelayError> {
        let owner = self.wake.owner();
        let now = now_unix_ms();
        let pending = self
            .table
            .pending_batch(self.options.batch, owner, now)
            .await?;
        if pending.is_empty() {
            return Ok(Round::default());
        }
        let started = std::time::Instant::now();
        let mut orders = by_order(pending);
        let full = i64::try_from(orders.len()).unwrap_or(i64::MAX) >= self.options.batch;
        // A lease a committing unit took for this relay needs no write of
        // its own while it has at least half its time left; the others are
        // leased in one statement, and their events read again now that
        // the lease is held (another relay may have published them between
        // the read and the lease).
        let unleased: Vec<String> = orders
            .iter()
            .filter(|(order_id, _)| {
                self.wake
                    .take_handed(order_id)
                    .is_none_or(|until| until - now <= self.wake.lease_ms() / 2)
            })
            .map(|(order_id, _)| order_id.clone())
            .collect();
        if !unleased.is_empty() {
            let taken = match self
                .table
                .lease_batch(&unleased, owner, now, now + self.wake.lease_ms())
                .await
            {
                Ok(taken) => taken,
                Err(error) => {
                    tracing::warn!(%error, "cannot lease the orders' events");
                    Vec::new()
                }
            };
            orders.retain(|(order_id, _)| !unleased.contains(order_id));
            let fresh = self.table.pending_of_orders(&taken).await;
            match fresh {
                Ok(fresh) => orders.extend(by_order(fresh)),
                Err(error) => {
                    // Give the leases up, or they block everyone until
                    // they expire.
                    let released = taken
                        .into_iter()
                        .map(|order_id| Outcome {
                            order_id,
                            ..Outcome::default()
                        })
                        .collect();
                    let _ = self.table.finish(owner, released).await;
                    return Err(error.into());
                }
            }
        }
        if orders.is_empty() {
            return Ok(Round::default());
        }
        let leased = started.elapsed();
        // Held by its first event's claim alone (handed over, no later
        // event): no lease row was written for the order, none to release.
        let claim_only: Vec<String> = orders
            .iter()
            .filter(|(order_id, events)| {
                !unleased.contains(order_id) && events.iter().all(|event| event.sequence == 1)
            })
            .map(|(order_id, _)| order_id.clone())
            .collect();
        let published = publish_in_waves(orders, |wave| self.publish_wave(broker, wave)).await;
        let sent = started.elapsed();
        let orders = published.len();
        let round = self.settle(published, &claim_only, full).await;
        tracing::debug!(
            orders,
            lease_us = leased.as_micros(),
            publish_us = (sent - leased).as_micros(),
            remove_and_release_us = (started.elapsed() - sent).as_micros(),
            "relay round"
        );
        Ok(round)
    }

    /// One round over orders handed over in memory with their events
    /// (`Wake::take_ready`: every event each order has had, under this
    /// relay's lease): published in waves like a read round's, with no read
    /// and no lease write, then removed like theirs.
    async fn publish_handed(
        &self,
        broker: &Broker,
        orders: Vec<(String, Vec<Pending>)>,
        full: bool,
    ) -> Round {
        // An order handed only its first event is held by that event's
        // claim: no lease row was written for it.
        let claim_only: Vec<String> = orders
            .iter()
            .filter(|(_, events)| events.iter().all(|event| event.sequence == 1))
            .map(|(order_id, _)| order_id.clone())
            .collect();
        let published = publish_in_waves(orders, |wave| self.publish_wave(broker, wave)).await;
        self.settle(published, &claim_only, full).await
    }

    /// What a round's publishes give: one write unit removing what the
    /// broker confirmed and releasing the orders' leases (none for the
    /// orders in `claim_only`), sharing the writer's commit with whatever
    /// else is queued.
    async fn settle(
        &self,
        published: Vec<(Outcome, Option<BrokerError>)>,
        claim_only: &[String],
        full: bool,
    ) -> Round {
        let mut round = Round {
            full,
            ..Round::default()
        };
        let mut outcomes = Vec::with_capacity(published.len());
        for (mut outcome, failure) in published {
            outcome.claim_only = claim_only.contains(&outcome.order_id);
            match failure {
                None => round.progressed = true,
                Some(error) => {
                    round.failure.get_or_insert(error);
                }
            }
            outcomes.push(outcome);
        }
        round.published = outcomes.iter().map(|outcome| outcome.confirmed.len()).sum();
        if let Err(error) = self.table.finish(self.wake.owner(), outcomes).await {
            // Published but not removed: they go out again after the leases
            // expire (duplicates consumers drop).
            tracing::warn!(%error, "cannot remove the published events from the outbox; they will go out again");
            return Round::default();
        }
        round
    }

    /// Publishes one wave (at most one event per order) in one exchange
    /// with the broker, with the fault injection's pauses around it.
    async fn publish_wave(
        &self,
        broker: &Broker,
        wave: Vec<Pending>,
    ) -> Vec<Result<(), BrokerError>> {
        if let Some(pause) = self.options.pause_before_publish {
            tracing::warn!(
                events = wave.len(),
                ?pause,
                "fault injection: committed, pausing before the publish"
            );
            tokio::time::sleep(pause).await;
        }
        let publishing = std::time::Instant::now();
        let events: Vec<events::Event> = wave.iter().map(Pending::to_event).collect();
        let answers = broker
            .publish_batch(TOPIC, &events.iter().collect::<Vec<_>>())
            .await;
        let publish_us = publishing.elapsed().as_micros();
        if let Some(pause) = self.options.pause_after_publish {
            tracing::warn!(
                events = wave.len(),
                ?pause,
                "fault injection: published, pausing before the removal"
            );
            tokio::time::sleep(pause).await;
        }
        let now = now_unix_ms();
        for (row, answer) in wave.iter().zip(&answers) {
            if answer.is_ok() {
                self.metrics.published(now - row.created_at_unix_ms);
                tracing::debug!(order_id = %row.order_id, sequence = row.sequence, event_id = %row.event_id, waited_ms = now - row.created_at_unix_ms, publish_us, "event published");
            } else {
                self.metrics.publish_error();
            }
        }
        answers
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

/// Pending events grouped by order, each order's in the order read (its
/// sequence), the orders in the order first seen.
fn by_order(pending: Vec<Pending>) -> Vec<(String, Vec<Pending>)> {
    let mut orders: Vec<(String, Vec<Pending>)> = Vec::new();
    for row in pending {
        match orders
            .iter_mut()
            .find(|(order_id, _)| *order_id == row.order_id)
        {
            Some((_, events)) => events.push(row),
            None => orders.push((row.order_id.clone(), vec![row])),
        }
    }
    orders
}

/// Publishes leased orders' events in waves with `publish`: each wave
/// holds the next event of every order still going, so an order's events
/// leave in sequence, one at a time, while the wave's events of different
/// orders share one exchange with the broker. An order stops at its first
/// failure (nothing after it is tried, so a later event never leaves before
/// an earlier one). For each order: what to record of it, and the broker's
/// error if one failed.
async fn publish_in_waves<F, Fut>(
    orders: Vec<(String, Vec<Pending>)>,
    publish: F,
) -> Vec<(Outcome, Option<BrokerError>)>
where
    F: Fn(Vec<Pending>) -> Fut,
    Fut: std::future::Future<Output = Vec<Result<(), BrokerError>>>,
{
    let mut results: Vec<(Outcome, Option<BrokerError>)> = Vec::with_capacity(orders.len());
    let mut queues = Vec::with_capacity(orders.len());
    for (order_id, events) in orders {
        results.push((
            Outcome {
                order_id,
                ..Outcome::default()
            },
            None,
        ));
        queues.push(events.into_iter());
    }
    loop {
        let (mut wave, mut whose) = (Vec::new(), Vec::new());
        for (at, queue) in queues.iter_mut().enumerate() {
            if results[at].1.is_some() {
                continue;
            }
            if let Some(row) = queue.next() {
                whose.push((at, row.event_id.clone()));
                wave.push(row);
            }
        }
        if wave.is_empty() {
            return results;
        }
        let mut answers = publish(wave).await.into_iter();
        for (at, event_id) in whose {
            // A missing answer is a failure: the order stops there.
            let answer = answers.next().unwrap_or_else(|| {
                Err(BrokerError::NotConfigured(
                    "the broker gave no answer for this event".to_owned(),
                ))
            });
            let (outcome, failure) = &mut results[at];
            match answer {
                Ok(()) => outcome.confirmed.push(event_id),
                Err(error) => {
                    outcome.failed = Some((event_id, error.to_string()));
                    *failure = Some(error);
                }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn event(order_id: &str, sequence: i64) -> Pending {
        Pending::for_test(order_id, sequence)
    }

    #[tokio::test]
    async fn an_order_whose_event_failed_gets_no_later_event_published() {
        let waves = Mutex::new(Vec::new());
        let publish = |wave: Vec<Pending>| {
            waves.lock().unwrap().push(
                wave.iter()
                    .map(|row| row.event_id.clone())
                    .collect::<Vec<_>>(),
            );
            async move {
                wave.iter()
                    .map(|row| {
                        if row.order_id == "ord_1" && row.sequence == 2 {
                            Err(BrokerError::NotConfigured("the broker refused it".into()))
                        } else {
                            Ok(())
                        }
                    })
                    .collect()
            }
        };
        let orders = vec![
            (
                "ord_1".to_owned(),
                (1..=3).map(|n| event("ord_1", n)).collect(),
            ),
            (
                "ord_2".to_owned(),
                (1..=3).map(|n| event("ord_2", n)).collect(),
            ),
            ("ord_3".to_owned(), vec![event("ord_3", 1)]),
        ];
        let results = publish_in_waves(orders, publish).await;
        assert_eq!(
            *waves.lock().unwrap(),
            [
                vec!["ord_1-1", "ord_2-1", "ord_3-1"],
                vec!["ord_1-2", "ord_2-2"],
                vec!["ord_2-3"],
            ],
            "one event per order per wave, in sequence; ord_1's third is never tried"
        );
        let (outcome, failure) = &results[0];
        assert_eq!(outcome.order_id, "ord_1");
        assert_eq!(outcome.confirmed, ["ord_1-1"]);
        let (failed, error) = outcome.failed.clone().expect("the failure is recorded");
        assert_eq!(failed, "ord_1-2");
        assert!(error.contains("the broker refused it"), "{error}");
        assert!(failure.is_some());
        let (outcome, failure) = &results[1];
        assert_eq!(
            outcome.confirmed,
            ["ord_2-1", "ord_2-2", "ord_2-3"],
            "in sequence"
        );
        assert_eq!((&outcome.failed, failure.is_none()), (&None, true));
        assert_eq!(results[2].0.confirmed, ["ord_3-1"]);
    }

    #[tokio::test]
    async fn an_event_the_broker_gave_no_answer_for_stops_its_order() {
        let results = publish_in_waves(
            vec![
                (
                    "ord_1".to_owned(),
                    vec![event("ord_1", 1), event("ord_1", 2)],
                ),
                ("ord_2".to_owned(), vec![event("ord_2", 1)]),
            ],
            // One answer for a wave of two.
            |_| async { vec![Ok(())] },
        )
        .await;
        assert_eq!(results[0].0.confirmed, ["ord_1-1", "ord_1-2"]);
        assert!(results[1].0.confirmed.is_empty());
        assert!(results[1].1.is_some(), "ord_2 failed, not left unanswered");
    }

    #[test]
    fn the_gather_grows_with_what_the_last_round_published_up_to_its_cap() {
        let options = RelayOptions::default();
        let per_event = options.gather_per_event;
        assert_eq!(options.gather_after(0), Duration::ZERO);
        assert_eq!(options.gather_after(1), per_event);
        assert_eq!(options.gather_after(3), per_event * 3);
        let at_the_cap = usize::try_from(options.gather.as_nanos() / per_event.as_nanos()).unwrap();
        assert_eq!(options.gather_after(at_the_cap), options.gather);
        assert_eq!(options.gather_after(at_the_cap + 1), options.gather);
        assert_eq!(
            options.gather_after(usize::MAX),
            options.gather,
            "no overflow"
        );
    }

    #[test]
    fn a_round_that_read_a_whole_batch_reads_again_at_once() {
        let options = RelayOptions::default();
        assert_eq!(options.pause_after(64, true), Duration::ZERO);
        assert_eq!(options.pause_after(0, true), Duration::ZERO);
        assert_eq!(options.pause_after(64, false), options.gather);
        assert_eq!(options.pause_after(2, false), options.gather_per_event * 2);
    }

    #[test]
    fn a_batch_is_grouped_by_order_keeping_each_orders_sequence() {
        let rows = vec![
            event("ord_2", 1),
            event("ord_1", 1),
            event("ord_2", 2),
            event("ord_1", 2),
        ];
        let grouped: Vec<(String, Vec<i64>)> = by_order(rows)
            .into_iter()
            .map(|(order_id, events)| (order_id, events.iter().map(|e| e.sequence).collect()))
            .collect();
        assert_eq!(
            grouped,
            [
                ("ord_2".to_owned(), vec![1, 2]),
                ("ord_1".to_owned(), vec![1, 2])
            ]
        );
    }
}
