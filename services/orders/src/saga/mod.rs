//! The PlaceOrder and CancelOrder sagas over users, inventory and payments,
//! and the recovery loop that finishes every order they leave unfinished.
//!
//! # State machine
//!
//! An order row is created PENDING at step RESERVE (after `users.GetUser`
//! found the user; an unknown user records nothing). From then on the row's
//! `status` + `step` say **what may have happened outside orders**, and each
//! is written *before* the remote call it allows:
//!
//! ```text
//! status     step     what may exist outside               remote calls (idempotency key)
//! ─────────  ───────  ───────────────────────────────────  ─────────────────────────────────────────
//! PENDING    RESERVE  reservation R(attempt)                inventory.Reserve(R, items, ttl, currency)
//! PENDING    CHARGE   R held; a charge under K              payments.Charge(K, user, total, currency)
//! PENDING    COMMIT   R held; payment P captured            inventory.Commit(R)
//! PENDING    UNDO     R held, released or (raced) committed; inventory.GetReservation(R), then
//!                     P maybe captured                      payments.Refund(P), inventory.Release(R)
//! CANCELLING CANCEL   R committed; P captured               payments.Refund(P), inventory.Restock(R)
//! CONFIRMED  DONE     R committed; P captured               —
//! REJECTED   DONE     nothing held, no money kept           —
//! CANCELLED  DONE     R restocked; P refunded               —
//!
//! R = order_reservation_id(order_id, attempt) = "order:<order_id>[:attempt]"
//! K = order_charge_key(order_id)               = "order:<order_id>"
//! P = the payment Charge(K) returned (payments keeps one per K)
//! ```
//!
//! `order_id` is a fresh random id made when the row is first written, so
//! a request resent after orders' database was lost is a new order with new
//! keys (PlaceOrder stays idempotent on `request_id` through the row's unique
//! index). Orders recorded before migration 0004 keep the keys derived from
//! their `request_id` (`saga_keys = 'request_id'`: `charge_key`,
//! `reservation_id`).
//!
//! Transitions (each one fenced write; see [`crate::store`]):
//!
//! ```text
//! RESERVE ─Reserve: RESERVED──► CHARGE   (prices, total, seller's currency frozen)
//!         ─Reserve: RELEASED──► RESERVE  attempt+1 (R expired or was released)
//!         ─Reserve refused────► REJECTED (nothing was reserved: all-or-nothing)
//! CHARGE  ─CAPTURED───────────► COMMIT   (payment_id recorded)
//!         ─DECLINED / refused─► UNDO     (reason recorded)
//! COMMIT  ─COMMITTED──────────► CONFIRMED
//!         ─refused (R expired)► UNDO     (the sale cannot happen: refund)
//! UNDO    ─R COMMITTED, P captured─────────► CONFIRMED (the sale happened)
//!         ─R COMMITTED, P refunded─Restock(R)─► REJECTED
//!         ─Refund(P) if any, Release(R)────► REJECTED
//! CONFIRMED ─CancelOrder──────► CANCELLING/CANCEL ─Refund(P), Restock(R)─► CANCELLED
//! any step ─upstream unreachable or outcome unknown─► same step (retried)
//! ```
//!
//! The invariant each transition protects:
//! - **RESERVE is written before Reserve**, with the attempt: whatever a
//!   crash leaves, R names the only reservation that can exist. A released R
//!   is never reserved again (inventory answers RELEASED), so moving to
//!   attempt+1 cannot leak the old one.
//! - **CHARGE is written before Charge**, with the frozen total: from then on
//!   the reservation is only released once the charge's fate is known, and
//!   every re-sent Charge is the same (same K, amount, currency), so payments
//!   returns the one payment it recorded: never charged twice.
//! - **COMMIT is written with P before Commit**: the money is known to be
//!   taken; the order either confirms or refunds P — never forgets it.
//! - **UNDO is written before Refund/Release**, with the reason: a crash
//!   in the middle resumes the compensation, never "RELEASED while a charge
//!   may exist".
//! - **CANCELLING is written before Refund/Restock**: a caller's timeout never
//!   leaves a refunded payment under a CONFIRMED order.
//!
//! # Who drives it
//!
//! The request that created the order runs the steps (and a repeat of the
//! same `request_id` may too); when a step cannot finish (an upstream down,
//! an unknown outcome) the run retries briefly within the caller's deadline,
//! then answers UNAVAILABLE/DEADLINE_EXCEEDED and lets go. The
//! [recovery loop](Saga::spawn_recovery), on every instance, at start-up and
//! every `--recovery-interval`, takes every unfinished order whose lease is
//! free and drives it, so no order depends on its caller coming back.
//!
//! One run at a time per order: a run holds a lease (`lease_owner`,
//! `lease_until_unix_ms`, renewed before each remote step) and a fencing token
//! (`lease_version`, a counter the database bumps at each acquisition). Every
//! saga write is conditional on the token, so a run that stalled past its
//! lease can no longer write; the remote calls it may still send are harmless
//! because they carry the same idempotency keys as the new run's (see
//! docs/adr on leases and fencing).
//!
//! - **UNDO reads the reservation before it refunds**: a Commit refused as
//!   expired never ends COMMITTED (inventory decides expiry in the Commit's
//!   own write), but if one did, refunding would leave units sold unpaid.
//!
//! A run that cannot finish an order (an upstream down, an unknown outcome)
//! defers it: `next_attempt_unix_ms` = now + the recovery interval doubling
//! per failed run, at most a lease, so orders that keep failing go behind
//! the others instead of taking every round.
//!
//! If a state breaks these invariants (e.g. inventory refuses to release a
//! reservation while the charge was declined), the order is **parked**: it
//! keeps its status and step, records why (`parked_reason`, `parked_detail`),
//! logs one error and is counted in `orders_parked{reason}`; recovery skips
//! it and a repeat of the request answers without running it, until an
//! operator retries or resolves it (`operator.rs`). It never guesses with
//! money.

mod calls;
mod cancel;
mod errors;
mod known_users;
mod operator;
mod parked_metric;
mod recovery;
mod steps;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use mesh::{
    client::Channel,
    proto::{
        inventory::v1::inventory_client::InventoryClient,
        payments::v1::payments_client::PaymentsClient,
        users::v1::{users_client::UsersClient, GetUserRequest},
    },
    storage::now_unix_ms,
};
use tonic::Code;

pub use errors::OrderError;

use mesh::deadline::CallBudget;

use crate::{
    domain::{new_order_id, OrderStatus, PlaceOrder, INVALID_ORDER_PREFIX},
    store::{Fence, Inserted, NewOrder, Order, Store},
    Upstreams,
};

/// The saga's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaOptions {
    /// Longest single upstream call.
    pub per_call: Duration,
    /// How long a run holds an order without renewing; at least three calls.
    pub lease: Duration,
    /// How long inventory holds a reservation the saga neither commits nor
    /// releases (the backstop if orders' own bookkeeping is lost).
    pub reservation_ttl: Duration,
    /// How often the recovery loop looks for unfinished orders.
    pub recovery_interval: Duration,
    /// How long a user that users said exists is taken as existing without
    /// asking again (zero: every new order asks).
    pub known_user_ttl: Duration,
}

impl SagaOptions {
    /// Options with `per_call` and the defaults for the rest.
    pub fn with_per_call(per_call: Duration) -> Self {
        Self {
            per_call,
            lease: per_call * 5,
            reservation_ttl: Duration::from_secs(15 * 60),
            recovery_interval: Duration::from_secs(1),
            known_user_ttl: Duration::from_secs(5 * 60),
        }
    }
}

/// Runs order operations against the store and the three upstream services.
#[derive(Debug, Clone)]
pub struct Saga {
    store: Store,
    users: UsersClient<Channel>,
    inventory: InventoryClient<Channel>,
    payments: PaymentsClient<Channel>,
    known_users: known_users::KnownUsers,
    options: SagaOptions,
}

/// What waiting for an order's lease gave.
enum Lease {
    /// This run holds it; the order as it is now.
    Held(Order, Fence),
    /// The order is final: this is the answer.
    Finished(Result<Order, OrderError>),
}

impl Saga {
    /// A saga over `store` calling `upstreams`.
    pub fn new(store: Store, upstreams: Upstreams, options: SagaOptions) -> Arc<Self> {
        let options = SagaOptions {
            lease: options.lease.max(options.per_call * 3),
            ..options
        };
        Arc::new(Self {
            store,
            users: UsersClient::new(upstreams.users),
            inventory: InventoryClient::new(upstreams.inventory),
            payments: PaymentsClient::new(upstreams.payments),
            known_users: known_users::KnownUsers::new(
                options.known_user_ttl,
                known_users::CAPACITY,
            ),
            options,
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// PlaceOrder: creates the order or returns/resumes the one placed with
    /// the same `request_id`.
    pub async fn place(
        &self,
        command: PlaceOrder,
        budget: CallBudget,
    ) -> Result<Order, OrderError> {
        if let Some(existing) = self.store.find_by_request(&command.request_id).await? {
            return self.replay(existing, &command, &budget).await;
        }
        self.check_user(&command.user_id, &budget).await?;
        let owner = new_owner();
        let order_id = new_order_id();
        let now = now_unix_ms();
        let inserted = self
            .store
            .insert_pending(
                &NewOrder {
                    order_id: &order_id,
                    request_id: &command.request_id,
                    user_id: &command.user_id,
                    currency: &command.currency,
                    items: &command.items,
                    now_unix_ms: now,
                },
                &owner,
                now + self.lease_ms(),
            )
            .await?;
        match inserted {
            Inserted::New(order, fence) => {
                tracing::debug!(order_id = %order.order_id, request_id = %order.request_id, "order recorded as pending");
                self.run_just_leased(order, fence, &budget).await
            }
            // A concurrent first attempt recorded it a moment ago.
            Inserted::Existing(order) => self.replay(order, &command, &budget).await,
        }
    }

    /// A repeat of PlaceOrder: the same order's outcome, or its saga resumed.
    async fn replay(
        &self,
        order: Order,
        command: &PlaceOrder,
        budget: &CallBudget,
    ) -> Result<Order, OrderError> {
        if !command.same_order(&order.user_id, &order.currency, &order.items()) {
            return Err(OrderError::RequestReused {
                request_id: command.request_id.clone(),
            });
        }
        if order.status != OrderStatus::Pending {
            return outcome(order);
        }
        match self.lease(&order.order_id, budget).await? {
            Lease::Finished(result) => result,
            Lease::Held(order, fence) => {
                tracing::info!(order_id = %order.order_id, "resuming a pending order");
                self.run(order, fence, budget).await
            }
        }
    }

    /// Takes the order's lease, waiting (bounded by the caller's deadline
    /// and the lease length) while another run holds it. It gives up a
    /// little before the caller's deadline ([`answer_margin`]), so that the
    /// caller hears why (another run holds the order: `Busy`) rather than
    /// only that its deadline passed.
    async fn lease(&self, order_id: &str, budget: &CallBudget) -> Result<Lease, OrderError> {
        let owner = new_owner();
        let remaining = budget.remaining();
        let give_up = tokio::time::Instant::now()
            + remaining
                .saturating_sub(answer_margin(remaining))
                .min(self.options.lease);
        loop {
            let now = now_unix_ms();
            if let Some(fence) = self
                .store
                .try_lease(order_id, &owner, now, now + self.lease_ms())
                .await?
            {
                return Ok(Lease::Held(self.store.get(order_id).await?, fence));
            }
            let current = self.store.get(order_id).await?;
            if !current.status.is_unfinished() {
                return Ok(Lease::Finished(outcome(current)));
            }
            if let Some(parked) = current.parked {
                return Ok(Lease::Finished(Err(OrderError::Parked {
                    order_id: current.order_id,
                    reason: parked.reason,
                    detail: parked.detail,
                })));
            }
            let now = tokio::time::Instant::now();
            if now >= give_up {
                return Err(OrderError::Busy {
                    order_id: order_id.to_owned(),
                });
            }
            tokio::time::sleep((give_up - now).min(Duration::from_millis(50))).await;
        }
    }

    /// Runs the saga steps holding the lease (renewed before the first
    /// step: it was taken before the order was read), then gives the lease
    /// up: a final order has freed it already; an order that needs a person
    /// is parked (logged once, here); any other is deferred to its next
    /// attempt (a backoff per order, see [`Saga::retry_backoff`]).
    async fn run(
        &self,
        order: Order,
        fence: Fence,
        budget: &CallBudget,
    ) -> Result<Order, OrderError> {
        self.run_leased(order, fence, budget, false).await
    }

    /// [`Saga::run`] for an order whose lease the caller's last write just
    /// took (the new order's insert): its first step needs no renewal.
    async fn run_just_leased(
        &self,
        order: Order,
        fence: Fence,
        budget: &CallBudget,
    ) -> Result<Order, OrderError> {
        self.run_leased(order, fence, budget, true).await
    }

    async fn run_leased(
        &self,
        order: Order,
        fence: Fence,
        budget: &CallBudget,
        just_leased: bool,
    ) -> Result<Order, OrderError> {
        let order_id = order.order_id.clone();
        let result = self.drive(order, &fence, budget, just_leased).await;
        let now = now_unix_ms();
        let given_up = match &result {
            Ok(order) => {
                tracing::info!(%order_id, status = order.status.as_str(), "order settled");
                Ok(())
            }
            Err(OrderError::Rejected { .. }) => Ok(()),
            Err(OrderError::Inconsistent { reason, detail, .. }) => {
                match self.store.park(&fence, *reason, detail, now).await {
                    Ok(true) => {
                        tracing::error!(%order_id, reason = reason.as_str(), %detail, "order parked: it needs an operator (ListParkedOrders, then RetryParkedOrder or ResolveParkedOrder)");
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(error) => Err(error),
                }
            }
            Err(error) => {
                // It quotes an upstream's answer: bounded.
                let error = mesh::bounded::message(&error.to_string());
                tracing::info!(%order_id, %error, "order not final yet");
                let backoff = self.retry_backoff();
                self.store.defer(&fence, now, backoff).await
            }
        };
        if let Err(error) = given_up {
            tracing::warn!(%order_id, %error, "cannot give the order's lease up; it will expire");
        }
        result
    }

    /// How long an order waits after `failed_runs` runs in a row that could
    /// not finish it: the recovery interval, doubling, at most one lease. So
    /// orders that keep failing (an upstream down for long, an answer that
    /// never comes) are tried less often and go behind the others, and one
    /// cut by an outage is finished at most a lease after the outage ends.
    ///
    /// A function of the failed runs that the store's write unit can own (it
    /// reads them inside the write).
    fn retry_backoff(&self) -> impl Fn(i64) -> i64 + Send + 'static {
        let (interval_ms, lease_ms) = (millis(self.options.recovery_interval), self.lease_ms());
        move |failed_runs| {
            let doublings = u32::try_from(failed_runs.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
            interval_ms.saturating_mul(1_i64 << doublings).min(lease_ms)
        }
    }

    /// users.GetUser: the user exists. A user users confirmed a little
    /// while ago is not asked about again ([`known_users::KnownUsers`]).
    async fn check_user(&self, user_id: &str, budget: &CallBudget) -> Result<(), OrderError> {
        if self.known_users.contains(user_id) {
            return Ok(());
        }
        let request = GetUserRequest {
            user_id: user_id.to_owned(),
        };
        match self.get_user(request, budget).await {
            Ok(_) => {
                self.known_users.remember(user_id);
                Ok(())
            }
            // An id users considers malformed names no user either.
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                Err(OrderError::UserNotFound {
                    user_id: user_id.to_owned(),
                })
            }
            Err(cause) => Err(OrderError::Upstream {
                service: "users",
                cause,
            }),
        }
    }

    fn lease_ms(&self) -> i64 {
        millis(self.options.lease)
    }

    /// Until when a lease written now holds.
    fn lease_from_now(&self) -> i64 {
        now_unix_ms() + self.lease_ms()
    }
}

/// The answer to a request about a final order.
fn outcome(order: Order) -> Result<Order, OrderError> {
    match order.status {
        OrderStatus::Rejected => Err(OrderError::Rejected {
            reason: order.rejection_reason,
        }),
        _ => Ok(order),
    }
}

/// Whether a rejection reason says the order itself was invalid.
pub fn rejected_as_invalid(reason: &str) -> bool {
    reason.starts_with(INVALID_ORDER_PREFIX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2)
}

/// How long before the caller's deadline (`remaining` from now) a wait
/// for another run's lease ends, leaving the answer time to reach the
/// caller: a fifth of what is left, at most 250 ms.
fn answer_margin(remaining: Duration) -> Duration {
    (remaining / 5).min(Duration::from_millis(250))
}

fn new_owner() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
