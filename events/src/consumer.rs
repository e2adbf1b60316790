//! Running a [`Handler`] over a consumer group's deliveries.
//!
//! For each delivery, in one span that continues the event's trace:
//! - a message that is not a valid event is dead-lettered at once;
//! - the handler's [`Outcome`] is acknowledged (every outcome is final:
//!   applied, a duplicate, deferred by the handler itself, ignored);
//! - [`HandlerError::Reject`] is dead-lettered at once; [`HandlerError::Retry`]
//!   is handed back to the broker (after a short pause, so a failing
//!   database is not hammered) until the delivery's attempt reaches the
//!   subscription's `max_deliveries`, then dead-lettered.
//!
//! Every dead letter is a `WARN` log line with the group, the event id and
//! the reason, and a count in `mesh_events_dead_letters_total{group,reason}`.
//! Outcomes are counted in `mesh_events_handled_total{group,outcome}`, and
//! the group's backlog (the consumer lag) is sampled into
//! `mesh_events_consumer_lag{group}` every few seconds.
//!
//! When the broker is unreachable the runner subscribes again with backoff;
//! nothing is lost meanwhile (unacknowledged deliveries return to the group).

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, LazyLock, Mutex,
    },
    time::Duration,
};

use tracing::Instrument;

use crate::{
    broker::{Broker, Delivery, EventBroker, Subscription},
    envelope::Event,
    error::BrokerError,
};

/// What the handler did with an event (all final: the delivery is
/// acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Its effect was applied.
    Applied,
    /// It had been handled before (same event id, or an older sequence).
    Duplicate,
    /// Kept by the handler for later (it arrived before an event it follows).
    Deferred,
    /// Of a type this consumer does not act on.
    Ignored,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Deferred => "deferred",
            Self::Ignored => "ignored",
        }
    }
}

/// Why the handler could not handle an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Something that may pass (the database is busy or down): try again.
    #[error("{0}")]
    Retry(String),
    /// The event can never be handled (it breaks the contract): dead-letter it.
    #[error("{0}")]
    Reject(String),
}

/// Applies events.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event; an `Ok` is acknowledged.
    fn handle(&self, event: &Event) -> impl Future<Output = Result<Outcome, HandlerError>> + Send;
}

/// How the runner paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    /// How often the group's backlog is sampled for the lag gauge.
    pub lag_every: Duration,
    /// Longest pause before handing a failed delivery back.
    pub max_retry_pause: Duration,
    /// Longest pause between subscription attempts while the broker is down.
    pub max_reconnect_pause: Duration,
    /// Test-only fault injection: wait this long after the handler's effect
    /// and before the acknowledgement (the fault campaign kills the process
    /// in that window).
    pub pause_before_ack: Option<Duration>,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            lag_every: Duration::from_secs(5),
            max_retry_pause: Duration::from_secs(2),
            max_reconnect_pause: Duration::from_secs(5),
            pause_before_ack: None,
        }
    }
}

/// A running consumer (its deliveries loop and its lag probe); dropping it
/// stops both. Deliveries in progress are not acknowledged and return to
/// the group.
#[derive(Debug)]
pub struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics: Arc<GroupMetrics>,
}

impl Running {
    /// The group's last sampled lag (-1 before the first sample).
    pub fn lag(&self) -> i64 {
        self.metrics.lag.load(Ordering::Relaxed)
    }

    /// Stops the consumer now.
    pub fn stop(self) {}
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts consuming `subscription` from `broker` with `handler`.
pub fn spawn<H: Handler>(
    broker: Broker,
    subscription: Subscription,
    handler: Arc<H>,
    options: RunnerOptions,
) -> Running {
    let metrics = GroupMetrics::of(&subscription.group);
    let probe = tokio::spawn(probe_lag(
        broker.clone(),
        subscription.clone(),
        metrics.clone(),
        options.lag_every,
    ));
    let runner = tokio::spawn(
        Runner {
            broker,
            subscription,
            handler,
            metrics: metrics.clone(),
            options,
        }
        .run(),
    );
    Running {
        tasks: vec![runner, probe],
        metrics,
    }
}

struct Runner<H> {
    broker: Broker,
    subscription: Subscription,
    handler: Arc<H>,
    metrics: Arc<GroupMetrics>,
    options: RunnerOptions,
}

impl<H: Handler> Runner<H> {
    async fn run(self) {
        let mut pause = Duration::from_millis(100);
        loop {
            let mut deliveries = match self.broker.subscribe(&self.subscription).await {
                Ok(deliveries) => {
                    tracing::info!(
                        broker = %self.broker.kind(),
                        topic = %self.subscription.topic,
                        group = %self.subscription.group,
                        consumer = %self.subscription.consumer,
                        "consuming events"
                    );
                    pause = Duration::from_millis(100);
                    deliveries
                }
                Err(error) => {
                    tracing::warn!(group = %self.subscription.group, %error, retry_in = ?pause, "cannot subscribe to the broker");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.options.max_reconnect_pause);
                    continue;
                }
            };
            loop {
                match deliveries.next().await {
                    Ok(delivery) => {
                        if let Err(error) = self.process(delivery).await {
                            tracing::warn!(group = %self.subscription.group, %error, "lost the broker while settling a delivery");
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(group = %self.subscription.group, %error, "the subscription broke; subscribing again");
                        break;
                    }
                }
            }
            tokio::time::sleep(pause).await;
        }
    }

    async fn process(&self, delivery: Delivery) -> Result<(), BrokerError> {
        let event = match &delivery.event {
            Ok(event) => event.clone(),
            Err(malformed) => {
                let reason = malformed.to_string();
                return self.dead_letter(delivery, "malformed", &reason, None).await;
            }
        };
        let span = crate::trace::process_span(
            &event,
            self.broker.kind(),
            &self.subscription.topic,
            &self.subscription.group,
        );
        let attempt = delivery.attempt;
        let result = self.handler.handle(&event).instrument(span.clone()).await;
        // The acknowledgement (or retry, or dead letter) in the event's span
        // too: instrumented, never a guard held across an await (that left
        // the span entered on a worker thread, and sqlx's Span::current()
        // there panicked on it once it closed).
        async move {
        match result {
            Ok(outcome) => {
                if let Some(pause) = self.options.pause_before_ack {
                    tracing::warn!(event_id = %event.id, ?pause, "fault injection: effect committed, pausing before the acknowledgement");
                    tokio::time::sleep(pause).await;
                }
                delivery.ack().await?;
                self.metrics.handled(outcome.as_str());
                tracing::debug!(event_id = %event.id, outcome = outcome.as_str(), attempt, "event handled");
                Ok(())
            }
            Err(HandlerError::Reject(reason)) => {
                self.dead_letter(delivery, "rejected", &reason, Some(&event))
                    .await
            }
            Err(HandlerError::Retry(reason)) if attempt >= self.subscription.max_deliveries => {
                let reason = format!("failed {attempt} times, last: {reason}");
                self.dead_letter(delivery, "failed", &reason, Some(&event))
                    .await
            }
            Err(HandlerError::Retry(reason)) => {
                self.metrics.handled("failed");
                tracing::warn!(event_id = %event.id, attempt, %reason, "handling failed; the event will be delivered again");
                let pause =
                    (Duration::from_millis(100) * attempt).min(self.options.max_retry_pause);
                tokio::time::sleep(pause).await;
                delivery.retry().await
            }
        }
        }
        .instrument(span)
        .await
    }

    async fn dead_letter(
        &self,
        delivery: Delivery,
        kind: &'static str,
        reason: &str,
        event: Option<&Event>,
    ) -> Result<(), BrokerError> {
        tracing::warn!(
            group = %self.subscription.group,
            event_id = event.map(|event| event.id.as_str()).unwrap_or("?"),
            broker_id = %delivery.broker_id,
            attempt = delivery.attempt,
            kind,
            %reason,
            "dead-lettered an event"
        );
        delivery.dead_letter(reason).await?;
        self.metrics.handled("dead_lettered");
        self.metrics.dead_lettered(kind);
        Ok(())
    }
}

async fn probe_lag(
    broker: Broker,
    subscription: Subscription,
    metrics: Arc<GroupMetrics>,
    every: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match broker
            .backlog(&subscription.topic, &subscription.group)
            .await
        {
            Ok(backlog) => metrics.lag.store(
                i64::try_from(backlog.total()).unwrap_or(i64::MAX),
                Ordering::Relaxed,
            ),
            Err(error) => tracing::debug!(%error, "cannot read the consumer lag"),
        }
    }
}

/// Counted when the broker side dead-letters a delivery its consumers kept
/// dying on.
pub(crate) fn count_broker_dead_letter(group: &str) {
    GroupMetrics::of(group).dead_lettered("redelivered");
}

const OUTCOMES: [&str; 6] = [
    "applied",
    "duplicate",
    "deferred",
    "ignored",
    "failed",
    "dead_lettered",
];
const DEAD_LETTER_KINDS: [&str; 4] = ["malformed", "rejected", "failed", "redelivered"];

/// One group's counters in this process (registered once per group).
#[derive(Debug)]
struct GroupMetrics {
    handled: HashMap<&'static str, AtomicU64>,
    dead_letters: HashMap<&'static str, AtomicU64>,
    lag: AtomicI64,
}

impl GroupMetrics {
    fn of(group: &str) -> Arc<Self> {
        static GROUPS: LazyLock<Mutex<HashMap<String, Arc<GroupMetrics>>>> =
            LazyLock::new(Default::default);
        let mut groups = GROUPS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(metrics) = groups.get(group) {
            return metrics.clone();
        }
        let metrics = Arc::new(Self {
            handled: OUTCOMES
                .iter()
                .map(|outcome| (*outcome, AtomicU64::new(0)))
                .collect(),
            dead_letters: DEAD_LETTER_KINDS
                .iter()
                .map(|kind| (*kind, AtomicU64::new(0)))
                .collect(),
            lag: AtomicI64::new(-1),
        });
        use mesh::telemetry::metrics::{register_counter_fn, register_gauge_fn};
        for outcome in OUTCOMES {
            let read = metrics.clone();
            register_counter_fn(
                "mesh_events_handled_total",
                "Events a consumer group finished with in this process, by outcome",
                &[("group", group), ("outcome", outcome)],
                move || read.handled[outcome].load(Ordering::Relaxed),
            );
        }
        for kind in DEAD_LETTER_KINDS {
            let read = metrics.clone();
            register_counter_fn(
                "mesh_events_dead_letters_total",
                "Events moved to the group's dead-letter stream or queue, by reason",
                &[("group", group), ("reason", kind)],
                move || read.dead_letters[kind].load(Ordering::Relaxed),
            );
        }
        let read = metrics.clone();
        register_gauge_fn(
            "mesh_events_consumer_lag",
            "Events of the topic the group has not acknowledged yet (undelivered + unacknowledged where the broker tells; -1 before the first sample)",
            &[("group", group)],
            move || read.lag.load(Ordering::Relaxed),
        );
        groups.insert(group.to_owned(), metrics.clone());
        metrics
    }

    fn handled(&self, outcome: &str) {
        if let Some(counter) = self.handled.get(outcome) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn dead_lettered(&self, kind: &str) {
        if let Some(counter) = self.dead_letters.get(kind) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}
