//! A new group starts from the oldest retained event.
//!
//! A group's quorum queue only holds what was routed to it after it was
//! bound. Every topic also has its **log**, a durable classic queue bound to
//! the topic whose messages expire after the retention (`x-message-ttl`) and
//! that nobody consumes. When a group's queue is created, its consumer binds
//! it (from then on every new event reaches it), waits a second (so that a
//! publish routed just before the bind has landed in the log), puts a
//! **marker** at the end of the log, and then reads the log from its head up
//! to the marker as its one exclusive consumer: each event is copied into the
//! new queue and back to the end of the log (with what is left of its
//! retention), and only then acknowledged. A reader that dies midway leaves
//! its unacknowledged messages in the log; a second reader waits for the
//! first (the consumer is exclusive).
//!
//! The copies arrive after some newer events, and an event published around
//! the bind may arrive twice: consumers deduplicate on `ce_id` and order by
//! the event's own sequence number, so neither matters.
//!
//! (RabbitMQ's stream queues would fit better, but RabbitMQ 3.10 does not
//! restart a single node's stream coordinator after the node is killed: the
//! stream stays unavailable, and with it every publish to its topic.)

use std::time::Duration;

use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel, Confirmation, PublisherConfirm,
};

use super::{consume::header_bytes, link::Link, names, NAME};
use crate::error::BrokerError;

/// The header that marks a backfill marker in a log.
const MARKER: &str = "x-mesh-backfill-marker";

/// How long a marker stays in the log if its reader died.
const MARKER_TTL_MS: u64 = 10 * 60 * 1000;

/// How long the log may stay silent before the marker shows up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// How long to wait for another reader of the log to finish.
const EXCLUSIVE_WAIT: Duration = Duration::from_secs(60);

/// Messages copied (and confirmed) before their originals are acknowledged.
const BATCH: usize = 256;

/// Copies `topic`'s retained log into `queue`; returns how many events.
pub(super) async fn copy_log(link: &Link, topic: &str, queue: &str) -> Result<u64, BrokerError> {
    let log = names::log_queue(topic);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let publisher = link.channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|error| link.lost(error))?;
    let marker = uuid::Uuid::new_v4().to_string();
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from(MARKER),
        AMQPValue::LongString(LongString::from(marker.as_str())),
    );
    let properties = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_expiration(ShortString::from(MARKER_TTL_MS.to_string()));
    confirmed(send(link, &publisher, &log, b"", properties).await?).await?;

    let (reader, tag, mut messages) = exclusive_reader(link, &log).await?;
    let retention_ms = u64::try_from(link.retention().as_millis()).unwrap_or(u64::MAX);
    let mut copied = 0u64;
    let mut batch: Vec<(Delivery, Vec<PublisherConfirm>)> = Vec::with_capacity(BATCH);
    loop {
        let delivery = match tokio::time::timeout(IDLE_TIMEOUT, messages.next()).await {
            Err(_) => {
                return Err(BrokerError::unavailable(
                    NAME,
                    format!("the log {log} went silent before the backfill marker"),
                ))
            }
            Ok(None) => {
                return Err(BrokerError::unavailable(
                    NAME,
                    "the log reader was cancelled",
                ))
            }
            Ok(Some(Err(error))) => return Err(link.lost(error)),
            Ok(Some(Ok(delivery))) => delivery,
        };
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let mut confirms = Vec::with_capacity(2);
        match header_bytes(&headers, MARKER) {
            Some(id) if id == marker.as_bytes() => {
                settle(link, std::mem::take(&mut batch)).await?;
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(|error| link.lost(error))?;
                break;
            }
            // Another reader's marker, left behind when it died: keep it
            // until it expires.
            Some(_) => {
                let properties = delivery.properties.clone();
                confirms.push(send(link, &publisher, &log, b"", properties).await?);
            }
            None => {
                let age_ms = (mesh::storage::now_unix_ms().max(0) as u64)
                    .saturating_sub(delivery.properties.timestamp().unwrap_or(0) * 1000);
                let left_ms = retention_ms.saturating_sub(age_ms);
                if left_ms > 0 {
                    let copy = delivery.properties.clone();
                    confirms.push(send(link, &publisher, queue, &delivery.data, copy).await?);
                    let back = delivery
                        .properties
                        .clone()
                        .with_expiration(ShortString::from(left_ms.to_string()));
                    confirms.push(send(link, &publisher, &log, &delivery.data, back).await?);
                    copied += 1;
                }
            }
        }
        batch.push((delivery, confirms));
        if batch.len() >= BATCH {
            settle(link, std::mem::take(&mut batch)).await?;
        }
    }
    let _ = reader
        .basic_cancel(
            ShortString::from(tag.as_str()),
            BasicCancelOptions::default(),
        )
        .await;
    let _ = reader.close(200, ShortString::from("backfilled")).await;
    let _ = publisher.close(200, ShortString::from("backfilled")).await;
    Ok(copied)
}

/// Consumes `log` as its only consumer, waiting while another reader has it.
async fn exclusive_reader(
    link: &Link,
    log: &str,
) -> Result<(Channel, String, lapin::Consumer), BrokerError> {
    let give_up = tokio::time::Instant::now() + EXCLUSIVE_WAIT;
    loop {
        let reader = link.channel().await?;
        reader
            .basic_qos(BATCH as u16, BasicQosOptions::default())
            .await
            .map_err(|error| link.lost(error))?;
        let tag = format!("backfill-{}", uuid::Uuid::new_v4().simple());
        match reader
            .basic_consume(
                ShortString::from(log),
                ShortString::from(tag.as_str()),
                BasicConsumeOptions {
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
        {
            Ok(consumer) => return Ok((reader, tag, consumer)),
            Err(error) if error.is_amqp_soft_error() && tokio::time::Instant::now() < give_up => {
                tracing::debug!(%error, "another backfill reads the log; waiting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(link.lost(error)),
        }
    }
}

async fn send(
    link: &Link,
    publisher: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<PublisherConfirm, BrokerError> {
    publisher
        .basic_publish(
            ShortString::from(""),
            ShortString::from(queue),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
        .map_err(|error| link.lost(error))
}

/// Waits for every copy of the batch, then acknowledges the originals.
async fn settle(
    link: &Link,
    batch: Vec<(Delivery, Vec<PublisherConfirm>)>,
) -> Result<(), BrokerError> {
    for (delivery, confirms) in batch {
        for confirm in confirms {
            confirmed(confirm).await?;
        }
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|error| link.lost(error))?;
    }
    Ok(())
}

async fn confirmed(confirm: PublisherConfirm) -> Result<(), BrokerError> {
    match confirm.await {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(other) => Err(BrokerError::NotConfirmed {
            broker: NAME,
            detail: format!("copying the retained log: {other:?}"),
        }),
        Err(error) => Err(BrokerError::unavailable(NAME, error)),
    }
}
