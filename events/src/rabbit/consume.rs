//! A consumer of a group's quorum queue, acknowledging manually.
//!
//! The attempt number comes from the quorum queue's `x-delivery-count`
//! header (the number of earlier deliveries that ended without an
//! acknowledgement: a requeue, or a consumer whose connection closed). A
//! dead letter is published, with its reason, to the dead-letter exchange
//! and confirmed before the original is acknowledged.

use futures::StreamExt;
use lapin::{
    message::Delivery as AmqpDelivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
    Acker, BasicProperties, Channel, Confirmation, Consumer,
};

use super::{
    backfill,
    link::{self, Link},
    names, NAME,
};
use crate::{
    broker::{Delivery, Receipt, Subscription},
    envelope::Event,
    error::BrokerError,
};

/// Deliveries of one consumer.
pub struct RabbitDeliveries {
    consumer: Consumer,
    channel: Channel,
    link: Link,
    topic: String,
    dead_queue: String,
}

impl std::fmt::Debug for RabbitDeliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitDeliveries")
            .field("topic", &self.topic)
            .field("dead_queue", &self.dead_queue)
            .finish_non_exhaustive()
    }
}

impl RabbitDeliveries {
    /// Declares the group's queues (copying the retained log into a new
    /// group's queue) and starts consuming.
    pub(super) async fn open(
        link: &Link,
        subscription: &Subscription,
    ) -> Result<Self, BrokerError> {
        let topic = subscription.topic.as_str();
        let queue = names::group_queue(topic, &subscription.group);
        let dead_queue = names::dead_letter_queue(topic, &subscription.group);
        link.declare_topic(topic).await?;
        let existed = exists(link, &queue).await?;

        let mut dead_arguments = FieldTable::default();
        dead_arguments.insert(
            ShortString::from("x-queue-type"),
            link::text_argument("quorum"),
        );
        link::declare_queue(link, &dead_queue, dead_arguments).await?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            ShortString::from("x-queue-type"),
            link::text_argument("quorum"),
        );
        arguments.insert(
            ShortString::from("x-delivery-limit"),
            // RabbitMQ counts returns: a limit of n allows n + 1 deliveries.
            AMQPValue::LongLongInt(i64::from(subscription.max_deliveries.max(1) - 1)),
        );
        arguments.insert(
            ShortString::from("x-dead-letter-exchange"),
            link::text_argument(names::DEAD_LETTER_EXCHANGE),
        );
        arguments.insert(
            ShortString::from("x-dead-letter-routing-key"),
            link::text_argument(&dead_queue),
        );
        link::declare_queue(link, &queue, arguments).await?;

        let channel = link.channel().await?;
        link::bind(
            &channel,
            &dead_queue,
            names::DEAD_LETTER_EXCHANGE,
            &dead_queue,
        )
        .await?;
        link::bind(&channel, &queue, names::EXCHANGE, topic).await?;
        if !existed {
            let copied = backfill::copy_log(link, topic, &queue).await?;
            tracing::info!(%queue, copied, "new consumer group: copied the retained events into its queue");
        }
        channel
            .basic_qos(subscription.prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|error| link.lost(error))?;
        let tag = format!(
            "{}-{}",
            subscription.consumer,
            uuid::Uuid::new_v4().simple()
        );
        let consumer = channel
            .basic_consume(
                ShortString::from(queue.as_str()),
                ShortString::from(tag.as_str()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| link.lost(error))?;
        Ok(Self {
            consumer,
            channel,
            link: link.clone(),
            topic: topic.to_owned(),
            dead_queue,
        })
    }

    /// The next delivery.
    pub(crate) async fn next(&mut self) -> Result<Delivery, BrokerError> {
        match self.consumer.next().await {
            Some(Ok(delivery)) => Ok(self.delivery(delivery)),
            Some(Err(error)) => Err(self.link.lost(error)),
            None => Err(BrokerError::unavailable(NAME, "the consumer was cancelled")),
        }
    }

    fn delivery(&self, delivery: AmqpDelivery) -> Delivery {
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let read = |name: &str| header_bytes(&headers, name);
        let earlier = headers
            .inner()
            .get("x-delivery-count")
            .and_then(integer)
            .unwrap_or(i64::from(delivery.redelivered));
        let attempt = u32::try_from(earlier.saturating_add(1)).unwrap_or(u32::MAX);
        Delivery {
            event: Event::from_headers(read, delivery.data.clone().into()),
            attempt,
            broker_id: delivery.delivery_tag.to_string(),
            receipt: Receipt::RabbitMq(Box::new(RabbitReceipt {
                acker: delivery.acker,
                link: self.link.clone(),
                topic: self.topic.clone(),
                dead_queue: self.dead_queue.clone(),
                body: delivery.data,
                properties: delivery.properties,
            })),
        }
    }
}

/// A consumer that stops closes its channel: RabbitMQ returns its
/// unacknowledged deliveries to the queue (counting them as deliveries).
impl Drop for RabbitDeliveries {
    fn drop(&mut self) {
        let channel = self.channel.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = channel
                    .close(200, ShortString::from("consumer stopped"))
                    .await;
            });
        }
    }
}

/// Whether `queue` exists.
async fn exists(link: &Link, queue: &str) -> Result<bool, BrokerError> {
    let channel = link.channel().await?;
    let declared = channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        )
        .await;
    let _ = channel.close(200, ShortString::from("done")).await;
    match declared {
        Ok(_) => Ok(true),
        Err(error) if link::is_not_found(&error) => Ok(false),
        Err(error) => Err(link.lost(error)),
    }
}

pub(super) fn header_bytes(headers: &FieldTable, name: &str) -> Option<Vec<u8>> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(text.as_bytes().to_vec()),
        AMQPValue::ShortString(text) => Some(text.as_str().as_bytes().to_vec()),
        AMQPValue::ByteArray(bytes) => Some(bytes.as_slice().to_vec()),
        _ => None,
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

/// What acknowledging one RabbitMQ delivery needs.
pub struct RabbitReceipt {
    acker: Acker,
    link: Link,
    topic: String,
    dead_queue: String,
    body: Vec<u8>,
    properties: BasicProperties,
}

impl std::fmt::Debug for RabbitReceipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitReceipt")
            .field("dead_queue", &self.dead_queue)
            .finish_non_exhaustive()
    }
}

impl RabbitReceipt {
    pub(crate) async fn ack(self) -> Result<(), BrokerError> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(|error| self.link.lost(error))
    }

    pub(crate) async fn retry(self) -> Result<(), BrokerError> {
        self.acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .map(drop)
            .map_err(|error| self.link.lost(error))
    }

    pub(crate) async fn dead_letter(self, reason: &str, attempts: u32) -> Result<(), BrokerError> {
        let mut headers = self.properties.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from("x-dead-reason"),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            ShortString::from("x-dead-attempts"),
            AMQPValue::LongLongInt(i64::from(attempts)),
        );
        let properties = self.properties.clone().with_headers(headers);
        let publisher = self.link.publisher(&self.topic).await?;
        let confirm = publisher
            .basic_publish(
                ShortString::from(names::DEAD_LETTER_EXCHANGE),
                ShortString::from(self.dead_queue.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &self.body,
                properties,
            )
            .await
            .map_err(|error| self.link.lost(error))?
            .await
            .map_err(|error| self.link.lost(error))?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            return Err(BrokerError::NotConfirmed {
                broker: NAME,
                detail: "the dead-letter queue did not take the message".to_owned(),
            });
        }
        self.ack().await
    }
}
