//! The RabbitMQ adapter (AMQP 0-9-1 through `lapin`).
//!
//! Topology (declared idempotently by whoever needs it first; see [`names`]):
//! - the durable topic exchange `mesh.events`; a topic is a routing key;
//! - per topic, the **log**: a durable classic queue `mesh.events.<topic>.log`
//!   bound to the topic, with `x-message-ttl` = the retention, that nobody
//!   consumes. It is what makes a group created later start from the oldest
//!   retained event (see [`backfill`]), and it means a published event always
//!   has a queue to land in, so a publish is never dropped as unroutable;
//! - per group, a durable **quorum queue** `mesh.events.<topic>.<group>`
//!   bound to the topic, with `x-delivery-limit` = the subscription's
//!   `max_deliveries` − 1 (RabbitMQ counts the returns, so that allows
//!   exactly `max_deliveries` deliveries) and dead-lettering to the direct exchange
//!   `mesh.events.dead`, routing to the quorum queue
//!   `mesh.events.<topic>.dead.<group>`.
//!
//! Publishing waits for the publisher confirm, which RabbitMQ sends once
//! every queue the event was routed to has it (for quorum and stream queues:
//! on a majority of replicas, fsynced). Consumers acknowledge manually.

mod backfill;
mod consume;
mod link;
pub mod names;

use std::time::Duration;

use lapin::{
    options::{BasicPublishOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Confirmation,
};

pub use consume::{RabbitDeliveries, RabbitReceipt};

use crate::{
    broker::{Backlog, Deliveries, EventBroker, Subscription},
    envelope::Event,
    error::BrokerError,
    settings::{BrokerKind, BrokerSettings},
};
use link::Link;

const NAME: &str = "rabbitmq";

/// The longest a publish waits for its confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// A RabbitMQ node or cluster.
#[derive(Debug, Clone)]
pub struct RabbitBroker {
    link: Link,
}

impl RabbitBroker {
    /// A broker for `settings` (connects lazily).
    pub fn new(settings: &BrokerSettings) -> Result<Self, BrokerError> {
        Ok(Self {
            link: Link::new(settings)?,
        })
    }

    /// The message TTL of the topics' logs.
    pub fn retention(&self) -> Duration {
        self.link.retention()
    }

    /// Sends `event` to `topic` on the publishing channel: its confirm, to
    /// await.
    async fn send(
        &self,
        topic: &str,
        event: &Event,
    ) -> Result<lapin::PublisherConfirm, BrokerError> {
        let publisher = self.link.publisher(topic).await?;
        publisher
            .basic_publish(
                ShortString::from(names::EXCHANGE),
                ShortString::from(topic),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &event.data,
                properties(event),
            )
            .await
            .map_err(|error| self.link.lost(error))
    }

    /// Waits for a sent message's confirm: whether the broker stored it.
    async fn confirmed(&self, confirm: lapin::PublisherConfirm) -> Result<(), BrokerError> {
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| BrokerError::NotConfirmed {
                broker: NAME,
                detail: format!("no confirm within {CONFIRM_TIMEOUT:?}"),
            })?
            .map_err(|error| {
                self.link.forget();
                BrokerError::NotConfirmed {
                    broker: NAME,
                    detail: crate::envelope::bounded(&error.to_string(), 300),
                }
            })?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(BrokerError::NotConfirmed {
                broker: NAME,
                detail: format!("unroutable: {}", returned.reply_text),
            }),
            Confirmation::Nack(_) => Err(BrokerError::NotConfirmed {
                broker: NAME,
                detail: "the broker could not store it (negative confirm)".to_owned(),
            }),
            Confirmation::NotRequested => Err(BrokerError::NotConfirmed {
                broker: NAME,
                detail: "publisher confirms are off on this channel".to_owned(),
            }),
        }
    }
}

/// The message properties of `event` (its attributes as headers, so a
/// consumer reads one set of names whatever the broker; the publish time as
/// the timestamp).
pub(crate) fn properties(event: &Event) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in event.headers() {
        headers.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    BasicProperties::default()
        .with_message_id(ShortString::from(event.id.as_str()))
        .with_content_type(ShortString::from(event.data_content_type.as_str()))
        .with_type(ShortString::from(event.event_type.as_str()))
        // When it was published: the log's retention counts from it.
        .with_timestamp((mesh::storage::now_unix_ms() / 1000).max(0) as u64)
        .with_delivery_mode(2)
        .with_headers(headers)
}

impl EventBroker for RabbitBroker {
    fn kind(&self) -> BrokerKind {
        BrokerKind::RabbitMq
    }

    async fn publish(&self, topic: &str, event: &Event) -> Result<(), BrokerError> {
        let confirm = self.send(topic, event).await?;
        self.confirmed(confirm).await
    }

    async fn publish_batch(&self, topic: &str, events: &[&Event]) -> Vec<Result<(), BrokerError>> {
        // Every message goes out before the first confirm is awaited: the
        // quorum queue stores and confirms them together.
        let mut sent = Vec::with_capacity(events.len());
        for event in events {
            sent.push(self.send(topic, event).await);
        }
        futures::future::join_all(sent.into_iter().map(|sent| async move {
            match sent {
                Ok(confirm) => self.confirmed(confirm).await,
                Err(error) => Err(error),
            }
        }))
        .await
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<Deliveries, BrokerError> {
        let deliveries = RabbitDeliveries::open(&self.link, subscription).await?;
        Ok(Deliveries::RabbitMq(Box::new(deliveries)))
    }

    async fn backlog(&self, topic: &str, group: &str) -> Result<Backlog, BrokerError> {
        Ok(Backlog {
            undelivered: self.ready(&names::group_queue(topic, group)).await?,
            unacknowledged: None,
        })
    }

    async fn dead_letter_count(&self, topic: &str, group: &str) -> Result<u64, BrokerError> {
        self.ready(&names::dead_letter_queue(topic, group)).await
    }

    async fn maintain(&self, _topic: &str) -> Result<(), BrokerError> {
        // The logs' message TTL trims them; quorum queues hold only what
        // their group has not acknowledged.
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.link.scratch_channel().await.map(drop)
    }
}

impl RabbitBroker {
    /// Messages ready in `queue` (0 when it does not exist yet).
    async fn ready(&self, queue: &str) -> Result<u64, BrokerError> {
        let channel = self.link.scratch_channel().await?;
        let declared = channel
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, ShortString::from("done")).await;
        match declared {
            Ok(queue) => Ok(u64::from(queue.message_count())),
            Err(error) if link::is_not_found(&error) => Ok(0),
            Err(error) => Err(self.link.lost(error)),
        }
    }
}
