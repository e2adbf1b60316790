//! A consumer in a Redis stream consumer group.
//!
//! [`RedisDeliveries::next`] alternates two sources:
//! - new entries, `XREADGROUP GROUP <group> <consumer> COUNT n BLOCK t … >`
//!   on a connection of its own;
//! - every `claim_idle / 2`, entries some consumer of the group (a dead one,
//!   or this one after a [`RedisReceipt::retry`]) left unacknowledged for
//!   `claim_idle`: `XAUTOCLAIM` moves them to this consumer, and each one's
//!   delivery count (from `XPENDING`) becomes its attempt number. One that
//!   was delivered more than `max_deliveries` times without a verdict is
//!   dead-lettered there instead of delivered again.
//!
//! A dead letter is `XADD` to the group's dead-letter stream and `XACK` of
//! the original in one `MULTI`/`EXEC` transaction.

use std::{collections::VecDeque, time::Duration};

use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::time::Instant;

use super::{
    dead_letter_key,
    reply::{self, Entry},
    stream_key, NAME,
};
use crate::{
    broker::{Delivery, Receipt, Subscription},
    envelope::{headers, Event},
    error::BrokerError,
};

/// The longest one `XREADGROUP` blocks.
pub(super) const BLOCK: Duration = Duration::from_secs(2);

/// Deliveries of one consumer.
pub struct RedisDeliveries {
    reader: MultiplexedConnection,
    control: ConnectionManager,
    subscription: Subscription,
    key: String,
    buffered: VecDeque<Delivery>,
    next_claim: Instant,
}

impl std::fmt::Debug for RedisDeliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDeliveries")
            .field("subscription", &self.subscription)
            .field("buffered", &self.buffered.len())
            .finish_non_exhaustive()
    }
}

impl RedisDeliveries {
    pub(super) fn new(
        reader: MultiplexedConnection,
        control: ConnectionManager,
        subscription: Subscription,
    ) -> Self {
        Self {
            key: stream_key(&subscription.topic),
            reader,
            control,
            subscription,
            buffered: VecDeque::new(),
            // Claim at once: a restarted consumer picks up what it left.
            next_claim: Instant::now(),
        }
    }

    fn claim_every(&self) -> Duration {
        (self.subscription.claim_idle / 2).max(Duration::from_millis(100))
    }

    /// The next delivery.
    pub(crate) async fn next(&mut self) -> Result<Delivery, BrokerError> {
        loop {
            if let Some(delivery) = self.buffered.pop_front() {
                return Ok(delivery);
            }
            let now = Instant::now();
            if now >= self.next_claim {
                self.claim().await?;
                self.next_claim = Instant::now() + self.claim_every();
                continue;
            }
            let block = (self.next_claim - now)
                .min(BLOCK)
                .max(Duration::from_millis(1));
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&self.subscription.group)
                .arg(&self.subscription.consumer)
                .arg("COUNT")
                .arg(self.subscription.prefetch.max(1))
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(">");
            let answer = super::query(&mut self.reader, &read).await;
            let entries = match answer {
                Ok(value) => reply::read_reply(&value),
                // The group was removed (or the stream deleted): create it again.
                Err(BrokerError::Refused { detail, .. }) if detail.contains("NOGROUP") => {
                    return Err(BrokerError::unavailable(NAME, "the consumer group is gone"));
                }
                Err(error) => return Err(error),
            };
            for entry in entries {
                let delivery = self.delivery(entry, 1);
                self.buffered.push_back(delivery);
            }
        }
    }

    /// Takes over deliveries left unacknowledged for `claim_idle`.
    async fn claim(&mut self) -> Result<(), BrokerError> {
        let mut autoclaim = redis::cmd("XAUTOCLAIM");
        autoclaim
            .arg(&self.key)
            .arg(&self.subscription.group)
            .arg(&self.subscription.consumer)
            .arg(self.subscription.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.subscription.prefetch.max(1));
        let claimed = reply::autoclaim_reply(&super::query(&mut self.control, &autoclaim).await?);
        for entry in claimed {
            let mut pending = redis::cmd("XPENDING");
            pending
                .arg(&self.key)
                .arg(&self.subscription.group)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
            let deliveries =
                reply::pending_deliveries(&super::query(&mut self.control, &pending).await?)
                    .into_iter()
                    .find(|(id, _)| *id == entry.id)
                    .map(|(_, count)| count);
            // Gone from the pending list meanwhile: someone acknowledged it.
            let Some(count) = deliveries else { continue };
            let delivery = self.delivery(entry, count);
            if count > self.subscription.max_deliveries {
                let reason = format!(
                    "delivered {count} times without an acknowledgement (its consumer keeps dying?)"
                );
                tracing::warn!(
                    group = %self.subscription.group,
                    entry = %delivery.broker_id,
                    %reason,
                    "dead-lettering an event"
                );
                crate::consumer::count_broker_dead_letter(&self.subscription.group);
                delivery.dead_letter(&reason).await?;
                continue;
            }
            self.buffered.push_back(delivery);
        }
        Ok(())
    }

    fn delivery(&self, entry: Entry, attempt: u32) -> Delivery {
        let data = entry.field(headers::DATA).unwrap_or_default().to_vec();
        let event = Event::from_headers(|name| entry.field(name).map(<[u8]>::to_vec), data.into());
        Delivery {
            event,
            attempt,
            broker_id: entry.id.clone(),
            receipt: Receipt::Redis(RedisReceipt {
                control: self.control.clone(),
                key: self.key.clone(),
                dead_key: dead_letter_key(&self.subscription.topic, &self.subscription.group),
                group: self.subscription.group.clone(),
                entry,
            }),
        }
    }
}

/// What acknowledging one Redis delivery needs.
pub struct RedisReceipt {
    control: ConnectionManager,
    key: String,
    dead_key: String,
    group: String,
    entry: Entry,
}

impl std::fmt::Debug for RedisReceipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReceipt")
            .field("key", &self.key)
            .field("group", &self.group)
            .field("entry", &self.entry.id)
            .finish_non_exhaustive()
    }
}

impl RedisReceipt {
    pub(crate) async fn ack(mut self) -> Result<(), BrokerError> {
        let mut ack = redis::cmd("XACK");
        ack.arg(&self.key).arg(&self.group).arg(&self.entry.id);
        super::query(&mut self.control, &ack).await.map(drop)
    }

    /// Leaves the entry pending: a consumer of the group claims it again once
    /// it has been idle for the claim time.
    pub(crate) async fn retry(self) -> Result<(), BrokerError> {
        Ok(())
    }

    pub(crate) async fn dead_letter(
        mut self,
        reason: &str,
        attempts: u32,
    ) -> Result<(), BrokerError> {
        let mut add = redis::cmd("XADD");
        add.arg(&self.dead_key).arg("*");
        for (name, value) in &self.entry.fields {
            add.arg(name).arg(value.as_slice());
        }
        add.arg("x-dead-reason")
            .arg(reason)
            .arg("x-dead-attempts")
            .arg(attempts)
            .arg("x-dead-entry")
            .arg(&self.entry.id);
        let mut ack = redis::cmd("XACK");
        ack.arg(&self.key).arg(&self.group).arg(&self.entry.id);
        let mut transaction = redis::pipe();
        transaction.atomic().add_command(add).add_command(ack);
        transaction
            .query_async::<redis::Value>(&mut self.control)
            .await
            .map(drop)
            .map_err(|error| BrokerError::unavailable(NAME, error))
    }
}
