//! The recovery loop: on every instance, at start-up and then every
//! `recovery_interval`, the unfinished orders (PENDING or CANCELLING) whose
//! lease is free or expired and whose next attempt is due are leased and
//! driven to a final state, the longest due first. Instances share the work
//! through the leases. A run that cannot finish an order defers it (its next
//! attempt backs off, doubling up to a lease), so orders that keep failing
//! go behind the others instead of taking every round; an order that needs
//! a person is parked and skipped until an operator retries or resolves it.
//! After each round the parked orders are counted (`orders_parked`).

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

    /// One round: drives the unfinished orders that are due, then counts
    /// the parked ones.
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
        super::parked_metric::set(&self.store.parked_counts().await?);
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
