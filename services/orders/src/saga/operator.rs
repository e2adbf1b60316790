//! What an operator does with a parked order (the saga parked it because
//! the upstream state contradicts it; see [`super`]): look at the list,
//! retry it once the upstream state is fixed, or close it by hand after
//! settling payment and stock outside the saga. Who may call these is
//! checked by the gRPC layer (the `operator` identity only).

use mesh::{deadline::CallBudget, storage::now_unix_ms};

use super::{Lease, OrderError, Saga};
use crate::{
    domain::{OrderStatus, PageKey},
    store::Order,
};

impl Saga {
    /// Up to `limit` parked orders, longest parked first, after `after`.
    pub async fn parked(
        &self,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<Order>, OrderError> {
        Ok(self.store.parked(after, limit).await?)
    }

    /// Unparks the order and runs its saga now: the order as the run leaves
    /// it (parked again, with the same error, if nothing changed).
    pub async fn retry_parked(
        &self,
        order_id: &str,
        budget: CallBudget,
    ) -> Result<Order, OrderError> {
        self.store.unpark(order_id, now_unix_ms()).await?;
        tracing::warn!(%order_id, "an operator retries a parked order");
        match self.lease(order_id, &budget).await? {
            Lease::Finished(result) => result,
            Lease::Held(order, fence) => self.run(order, fence, &budget).await,
        }
    }

    /// Closes a parked order with the final `status` an operator chose
    /// after settling payment and stock by hand: a PENDING order becomes
    /// CONFIRMED or REJECTED, a CANCELLING one CANCELLED or (cancellation
    /// abandoned) CONFIRMED. `note` says what was done; it becomes the
    /// rejection reason of a REJECTED order.
    pub async fn resolve_parked(
        &self,
        order_id: &str,
        status: OrderStatus,
        note: &str,
    ) -> Result<Order, OrderError> {
        let order = self.store.get(order_id).await?;
        let allowed = match order.status {
            OrderStatus::Pending => {
                matches!(status, OrderStatus::Confirmed | OrderStatus::Rejected)
            }
            OrderStatus::Cancelling => {
                matches!(status, OrderStatus::Cancelled | OrderStatus::Confirmed)
            }
            _ => false,
        };
        if !allowed {
            return Err(OrderError::CannotResolve {
                order_id: order_id.to_owned(),
                from: order.status,
                to: status,
            });
        }
        let reason = match status {
            OrderStatus::Rejected => format!("resolved by an operator: {note}"),
            _ => String::new(),
        };
        let resolved = self
            .store
            .resolve(order_id, status, &reason, now_unix_ms())
            .await?;
        tracing::warn!(%order_id, status = status.as_str(), %note, "an operator resolved a parked order");
        Ok(resolved)
    }
}
