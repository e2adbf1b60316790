//! Shipping as a consumer of the orders service's events: group
//! [`GROUP`] on topic [`TOPIC`], each event applied by [`Store::handle`]
//! (inbox + effect in one write unit, acknowledged only once it is
//! durably committed).

use events::{
    consumer::{Handler, HandlerError, Outcome},
    Event,
};

use crate::{
    domain,
    store::{Handled, Received, Store, StoreError},
};

/// The topic the orders service publishes to.
pub const TOPIC: &str = "orders";

/// Shipping's consumer group (also the inbox's `consumer`: every instance
/// shares one inbox).
pub const GROUP: &str = "shipping";

/// Applies order events to shipments.
#[derive(Debug, Clone)]
pub struct ShipmentsFromOrders {
    store: Store,
}

impl ShipmentsFromOrders {
    /// A handler writing to `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl Handler for ShipmentsFromOrders {
    async fn handle(&self, event: &Event) -> Result<Outcome, HandlerError> {
        let decoded = domain::decode_event(&event.event_type, &event.subject, &event.data)
            .map_err(HandlerError::Reject)?;
        let Some(order_event) = decoded else {
            return Ok(Outcome::Ignored);
        };
        let received = Received {
            event_id: &event.id,
            event_type: &event.event_type,
            body: &event.data,
            event: &order_event,
        };
        match self
            .store
            .handle(GROUP, &received, mesh::storage::now_unix_ms)
            .await
        {
            Ok(Handled::Applied) => {
                tracing::info!(
                    order_id = order_event.order_id(),
                    sequence = order_event.sequence(),
                    event_type = %event.event_type,
                    "event applied"
                );
                Ok(Outcome::Applied)
            }
            Ok(Handled::Duplicate) => Ok(Outcome::Duplicate),
            Ok(Handled::Waiting) => {
                tracing::info!(
                    order_id = order_event.order_id(),
                    sequence = order_event.sequence(),
                    "event arrived before an earlier one of its order; it waits"
                );
                Ok(Outcome::Deferred)
            }
            Err(StoreError::Corrupt(reason)) => Err(HandlerError::Reject(reason)),
            Err(error) => Err(HandlerError::Retry(error.to_string())),
        }
    }
}
