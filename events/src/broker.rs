//! The one broker interface ([`EventBroker`]) and [`Broker`], the adapter a
//! URL chose.
//!
//! The contract both adapters keep (checked against both real servers by
//! `events/tests/conformance.rs`):
//!
//! - [`EventBroker::publish`] returns only once the broker has stored the
//!   event durably (Redis: the `XADD` reply under `appendfsync always`;
//!   RabbitMQ: the publisher confirm). An error means "maybe stored": the
//!   publisher publishes again, and consumers deduplicate on `ce_id`.
//! - Each consumer **group** receives every event of a topic at least once;
//!   within a group, each delivery goes to one consumer until it is
//!   acknowledged ([`Delivery::ack`]), handed back ([`Delivery::retry`]) or
//!   dead-lettered ([`Delivery::dead_letter`]). A consumer that dies with
//!   deliveries unacknowledged loses them to the other consumers of its
//!   group (Redis: `XAUTOCLAIM` after [`Subscription::claim_idle`];
//!   RabbitMQ: when its connection closes).
//! - A delivery carries its attempt number; one that was delivered more than
//!   [`Subscription::max_deliveries`] times without a verdict (its consumer
//!   keeps crashing on it) is dead-lettered by the broker side of the
//!   adapter (Redis: at claim time; RabbitMQ: the quorum queue's
//!   `x-delivery-limit`).
//! - A group created after events were published starts from the oldest
//!   event still retained (retention: at least [`BrokerSettings`]'s
//!   retention, and never an event some existing group has not acknowledged).
//! - Order is not guaranteed across redeliveries: consumers that need order
//!   (shipping) use the event's own sequence number.
//!
//! [`BrokerSettings`]: crate::BrokerSettings

use std::{future::Future, time::Duration};

use crate::{
    envelope::{Event, MalformedEvent},
    error::BrokerError,
    rabbit, redis,
    settings::BrokerKind,
};

/// Deliveries of one event before the broker dead-letters it on its own.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// One consumer's place in a consumer group of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topic, e.g. `orders` (a Redis stream, a RabbitMQ routing key).
    pub topic: String,
    /// The consumer group, e.g. `shipping`: every group gets every event.
    pub group: String,
    /// This consumer's name inside the group (the instance id).
    pub consumer: String,
    /// Deliveries without an acknowledgement after which the event is
    /// dead-lettered.
    pub max_deliveries: u32,
    /// Redis: how long a delivery may stay unacknowledged before another
    /// consumer of the group takes it over (its consumer is presumed dead),
    /// and when a handed-back delivery is tried again.
    pub claim_idle: Duration,
    /// Deliveries fetched ahead (Redis `COUNT`, RabbitMQ prefetch).
    pub prefetch: u16,
}

impl Subscription {
    /// `consumer` in `group` on `topic` with the defaults (5 deliveries,
    /// 30 s claim idle time, 64 ahead).
    pub fn new(topic: &str, group: &str, consumer: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            claim_idle: Duration::from_secs(30),
            prefetch: 64,
        }
    }
}

/// How far behind a consumer group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Events not delivered to the group yet.
    pub undelivered: u64,
    /// Events delivered but not acknowledged, when the broker says
    /// (Redis does; RabbitMQ's AMQP interface does not).
    pub unacknowledged: Option<u64>,
}

impl Backlog {
    /// Undelivered plus unacknowledged: the consumer lag.
    pub fn total(&self) -> u64 {
        self.undelivered + self.unacknowledged.unwrap_or(0)
    }
}

/// The operations every broker adapter offers.
pub trait EventBroker: Send + Sync {
    /// Which broker this is.
    fn kind(&self) -> BrokerKind;

    /// Publishes `event` to `topic`, returning once the broker confirmed it
    /// stored the event durably.
    fn publish(
        &self,
        topic: &str,
        event: &Event,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Publishes `events` to `topic` in one exchange with the broker where
    /// it can (Redis: one pipeline, so one read and one `fsync` for all of
    /// them; RabbitMQ: every message sent before the first confirm is
    /// awaited): one answer per event, in the order given, each meaning
    /// what [`EventBroker::publish`]'s does. The broker stores them in
    /// that order, but one may fail while a later one is stored: put only
    /// independent events (of different orders) in one batch.
    fn publish_batch(
        &self,
        topic: &str,
        events: &[&Event],
    ) -> impl Future<Output = Vec<Result<(), BrokerError>>> + Send;

    /// Joins (creating if needed) the subscription's group.
    fn subscribe(
        &self,
        subscription: &Subscription,
    ) -> impl Future<Output = Result<Deliveries, BrokerError>> + Send;

    /// The group's backlog on `topic`.
    fn backlog(
        &self,
        topic: &str,
        group: &str,
    ) -> impl Future<Output = Result<Backlog, BrokerError>> + Send;

    /// Events dead-lettered by `group` on `topic` so far (and not removed).
    fn dead_letter_count(
        &self,
        topic: &str,
        group: &str,
    ) -> impl Future<Output = Result<u64, BrokerError>> + Send;

    /// Applies retention to `topic` (Redis: trims what every group has
    /// acknowledged and is older than the retention; RabbitMQ: the log
    /// stream's `x-max-age` does it, nothing to do).
    fn maintain(&self, topic: &str) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Whether the broker answers.
    fn ping(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

/// The broker a URL chose.
#[derive(Debug, Clone)]
pub enum Broker {
    /// Redis Streams.
    Redis(redis::RedisBroker),
    /// RabbitMQ.
    RabbitMq(rabbit::RabbitBroker),
}

impl EventBroker for Broker {
    fn kind(&self) -> BrokerKind {
        match self {
            Self::Redis(broker) => broker.kind(),
            Self::RabbitMq(broker) => broker.kind(),
        }
    }

    async fn publish(&self, topic: &str, event: &Event) -> Result<(), BrokerError> {
        event.validate()?;
        match self {
            Self::Redis(broker) => broker.publish(topic, event).await,
            Self::RabbitMq(broker) => broker.publish(topic, event).await,
        }
    }

    async fn publish_batch(&self, topic: &str, events: &[&Event]) -> Vec<Result<(), BrokerError>> {
        // An invalid event is answered without being sent; the others go.
        let mut answers: Vec<Option<Result<(), BrokerError>>> = events
            .iter()
            .map(|event| event.validate().err().map(|error| Err(error.into())))
            .collect();
        let valid: Vec<&Event> = events
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_none())
            .map(|(event, _)| *event)
            .collect();
        let mut sent = match self {
            Self::Redis(broker) => broker.publish_batch(topic, &valid).await,
            Self::RabbitMq(broker) => broker.publish_batch(topic, &valid).await,
        }
        .into_iter();
        answers
            .iter_mut()
            .map(|answer| {
                answer.take().unwrap_or_else(|| {
                    sent.next().unwrap_or_else(|| {
                        Err(BrokerError::NotConfirmed {
                            broker: "broker",
                            detail: "the adapter gave fewer answers than events".to_owned(),
                        })
                    })
                })
            })
            .collect()
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<Deliveries, BrokerError> {
        match self {
            Self::Redis(broker) => broker.subscribe(subscription).await,
            Self::RabbitMq(broker) => broker.subscribe(subscription).await,
        }
    }

    async fn backlog(&self, topic: &str, group: &str) -> Result<Backlog, BrokerError> {
        match self {
            Self::Redis(broker) => broker.backlog(topic, group).await,
            Self::RabbitMq(broker) => broker.backlog(topic, group).await,
        }
    }

    async fn dead_letter_count(&self, topic: &str, group: &str) -> Result<u64, BrokerError> {
        match self {
            Self::Redis(broker) => broker.dead_letter_count(topic, group).await,
            Self::RabbitMq(broker) => broker.dead_letter_count(topic, group).await,
        }
    }

    async fn maintain(&self, topic: &str) -> Result<(), BrokerError> {
        match self {
            Self::Redis(broker) => broker.maintain(topic).await,
            Self::RabbitMq(broker) => broker.maintain(topic).await,
        }
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        match self {
            Self::Redis(broker) => broker.ping().await,
            Self::RabbitMq(broker) => broker.ping().await,
        }
    }
}

/// A consumer's stream of deliveries.
#[derive(Debug)]
pub enum Deliveries {
    /// From Redis.
    Redis(Box<redis::RedisDeliveries>),
    /// From RabbitMQ.
    RabbitMq(Box<rabbit::RabbitDeliveries>),
}

impl Deliveries {
    /// The next delivery, waiting for one. An error means the subscription
    /// is broken (the connection dropped): subscribe again.
    pub async fn next(&mut self) -> Result<Delivery, BrokerError> {
        match self {
            Self::Redis(deliveries) => deliveries.next().await,
            Self::RabbitMq(deliveries) => deliveries.next().await,
        }
    }
}

/// One delivery of one message to this consumer: acknowledge it, hand it
/// back, or dead-letter it.
#[derive(Debug)]
pub struct Delivery {
    /// The event, or why the message is not one.
    pub event: Result<Event, MalformedEvent>,
    /// 1 for the first delivery to the group, then +1 for each redelivery.
    pub attempt: u32,
    /// The broker's id of the message (stream entry id, delivery tag).
    pub broker_id: String,
    pub(crate) receipt: Receipt,
}

/// What a verdict needs to reach the broker.
#[derive(Debug)]
pub(crate) enum Receipt {
    Redis(redis::RedisReceipt),
    RabbitMq(Box<rabbit::RabbitReceipt>),
}

impl Delivery {
    /// Done: the group will not see this message again.
    pub async fn ack(self) -> Result<(), BrokerError> {
        match self.receipt {
            Receipt::Redis(receipt) => receipt.ack().await,
            Receipt::RabbitMq(receipt) => receipt.ack().await,
        }
    }

    /// Not now: the message is delivered again later (Redis: after the
    /// claim idle time; RabbitMQ: requeued at once), with `attempt` + 1.
    pub async fn retry(self) -> Result<(), BrokerError> {
        match self.receipt {
            Receipt::Redis(receipt) => receipt.retry().await,
            Receipt::RabbitMq(receipt) => receipt.retry().await,
        }
    }

    /// Never: the message moves to the group's dead-letter stream or queue
    /// with `reason` (bounded), for a person to look at.
    pub async fn dead_letter(self, reason: &str) -> Result<(), BrokerError> {
        let reason = crate::envelope::bounded(reason, 500);
        match self.receipt {
            Receipt::Redis(receipt) => receipt.dead_letter(&reason, self.attempt).await,
            Receipt::RabbitMq(receipt) => receipt.dead_letter(&reason, self.attempt).await,
        }
    }
}
