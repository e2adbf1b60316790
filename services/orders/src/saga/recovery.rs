//! The recovery loop: on every instance, at start-up and then every
//! `recovery_interval`, every unfinished order (PENDING or CANCELLING) whose
//! lease is free or expired is leased and driven to a final state. Instances
//! share the work through the leases; an order whose upstream is still down
//! stays where it is until the next round.

use std::sync::Arc;

use futures::StreamExt;
use mesh::storage::now_unix_ms;

use super::{OrderError, Saga};
use mesh::deadline::CallBudget;

/// Orders one round looks at.
const ORDERS_PER_ROUND: i64 = 256;
/// Orders one instance drives at the same time.
const CONCURRENT_ORDERS: usize = 16;

/// What one recovery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Unfinished orders with a free lease.
    pub found: usize,
    /// Of those, reached a final state in this round.
    pub finished: usize,
}

impl Saga {
    /// Starts the recovery loop; it runs until the returned task is aborted.
    pub fn spawn_recovery(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let saga = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(saga.options.recovery_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match saga.recover_once().await {
                    Ok(round) if round.found > 0 => {
                        tracing::info!(
                            found = round.found,
                            finished = round.finished,
                            "recovery round"
                        )
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "recovery round failed; retrying"),
                }
            }
        })
    }

    /// One round: drives every unfinished order whose lease is free.
    pub async fn recover_once(&self) -> Result<Round, OrderError> {
        let ids = self
            .store
            .unfinished(now_unix_ms(), ORDERS_PER_ROUND)
            .await?;
        let found = ids.len();
        let finished = futures::stream::iter(ids)
            .map(|order_id| async move { self.recover(&order_id).await })
            .buffer_unordered(CONCURRENT_ORDERS)
            .filter(|finished| std::future::ready(*finished))
            .count()
            .await;
        Ok(Round { found, finished })
    }

    /// Leases and drives one order; whether it is final now.
    async fn recover(&self, order_id: &str) -> bool {
        let owner = super::new_owner();
        let now = now_unix_ms();
        let fence = match self
            .store
            .try_lease(order_id, &owner, now, now + self.lease_ms())
            .await
        {
            Ok(Some(fence)) => fence,
            // Another run (a request, another instance) has it.
            Ok(None) => return false,
            Err(error) => {
                tracing::warn!(%order_id, %error, "cannot lease the order for recovery");
                return false;
            }
        };
        let order = match self.store.get(order_id).await {
            Ok(order) => order,
            Err(error) => {
                tracing::warn!(%order_id, %error, "cannot read the order for recovery");
                let _ = self.store.release_lease(&fence).await;
                return false;
            }
        };
        tracing::info!(%order_id, step = order.step.as_str(), "recovering an unfinished order");
        let budget = CallBudget::detached(self.options.per_call);
        match self.run(order, fence, &budget).await {
            Ok(_) | Err(OrderError::Rejected { .. }) => true,
            Err(_) => false,
        }
    }
}
