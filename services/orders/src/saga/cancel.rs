//! CancelOrder as a recoverable saga: CONFIRMED → CANCELLING (written first)
//! → refund the payment and restock the units → CANCELLED. A caller that
//! gives up halfway leaves a CANCELLING order the recovery loop finishes.

use mesh::{deadline::CallBudget, storage::now_unix_ms};

use super::{Lease, OrderError, Saga};
use crate::{
    domain::{CancelStep, OrderStatus},
    store::{Fence, Order},
};

impl Saga {
    /// CancelOrder: records the cancellation, then refunds and restocks.
    /// Idempotent: a cancelled order is returned as it is.
    pub async fn cancel(&self, order_id: &str, budget: CallBudget) -> Result<Order, OrderError> {
        let order = self.store.get(order_id).await?;
        match order.status.on_cancel() {
            CancelStep::AlreadyCancelled => return Ok(order),
            CancelStep::Refuse => {
                return Err(OrderError::NotCancellable {
                    order_id: order.order_id,
                    status: order.status,
                })
            }
            CancelStep::RefundThenCancel => {}
        }
        if order.status == OrderStatus::Confirmed
            && self.store.request_cancel(order_id, now_unix_ms()).await?
        {
            tracing::info!(%order_id, "order cancelling");
        }
        match self.lease(order_id, &budget).await? {
            Lease::Finished(result) => result,
            Lease::Held(order, fence) => self.run(order, fence, &budget).await,
        }
    }

    /// CANCEL: refund, restock, then CANCELLED.
    pub(super) async fn cancel_step(
        &self,
        order: &mut Order,
        fence: &Fence,
        budget: &CallBudget,
    ) -> Result<(), OrderError> {
        self.refund_payment(order, budget).await?;
        let id = order.reservation_id();
        self.restock_units(order, &id, budget).await?;
        *order = self.store.cancelled(fence, order, now_unix_ms()).await?;
        tracing::info!(order_id = %order.order_id, payment_id = %order.payment_id, "order cancelled: refunded and restocked");
        Ok(())
    }
}
