//! The PlaceOrder saga and CancelOrder, over users, inventory and payments.
//!
//! # State machine
//!
//! An order row is created PENDING (after `users.GetUser` found the user;
//! an unknown user records nothing) and the saga then runs these steps. Every
//! step is idempotent, so a repeat of `PlaceOrder` with the same `request_id`
//! simply runs them again from the top and picks up where the last run
//! stopped:
//!
//! ```text
//!  PENDING ─┬─ 1. inventory.Reserve(reservation_id(request_id, attempt), items)
//!           │     ├─ FAILED_PRECONDITION/NOT_FOUND/INVALID_ARGUMENT ──► REJECTED "insufficient stock: …"
//!           │     │                                                       (nothing was reserved)
//!           │     ├─ answer RELEASED (a previous run released it) ──► attempt += 1, reserve again
//!           │     ├─ other error ──► stays PENDING, UNAVAILABLE / DEADLINE_EXCEEDED
//!           │     └─ RESERVED (or COMMITTED) ──► store unit prices and total
//!           │                                   (frozen once a charge may exist)
//!           ├─ 2. charge_sent := 1, then payments.Charge(charge_key(request_id), user, total, currency)
//!           │     ├─ CAPTURED ──► record payment_id, go to 3
//!           │     ├─ DECLINED ──► inventory.Release ─ok─► REJECTED "payment declined: …"
//!           │     │                                  └fail► stays PENDING, UNAVAILABLE
//!           │     ├─ refused (INVALID_ARGUMENT…) and no earlier Charge was sent
//!           │     │           ──► charge_sent := 0, Release ─ok─► REJECTED "payment failed: …"
//!           │     ├─ not applied (connection refused, UNIMPLEMENTED…): if no earlier Charge
//!           │     │     was sent: Release (best effort, logged), charge_sent := 0;
//!           │     │     stays PENDING, UNAVAILABLE
//!           │     └─ outcome unknown (DEADLINE_EXCEEDED, CANCELLED, a bare UNAVAILABLE,
//!           │           INTERNAL…) ──► stays PENDING with the reservation held, and
//!           │           UNAVAILABLE / DEADLINE_EXCEEDED
//!           └─ 3. inventory.Commit(reservation_id) ──► CONFIRMED (payment_id)
//!                 └─ error ──► stays PENDING (payment captured, reservation held)
//! ```
//!
//! Why it is safe:
//! - **Never charged twice.** The payments idempotency key is derived from the
//!   `request_id` only, and the amount is frozen once a Charge may have been
//!   sent, so every resumed run sends exactly the same Charge and payments
//!   returns the payment it already recorded.
//! - **No dangling reservation after a decline or a failed charge.** A decline,
//!   a refusal, or a Charge that provably never reached payments releases the
//!   reservation. A released reservation is never reused: the next run sees
//!   RELEASED from `Reserve` and reserves again under the next `attempt`.
//! - **Stock is not released while money may have been taken.** If the outcome
//!   of a Charge is unknown (a timeout, or a connection lost mid-call), the
//!   reservation is kept and `charge_sent` stays 1: a later run re-sends the
//!   same Charge, which either returns the payment (then Commit) or its decline
//!   (then Release). The order is PENDING meanwhile and the client is told
//!   UNAVAILABLE or DEADLINE_EXCEEDED: retrying with the same `request_id`
//!   resolves it. Until then the stock stays reserved — the price of never
//!   selling stock that was paid for.
//! - **One run at a time.** A run holds a lease on the order (`lease_owner`,
//!   `lease_until_unix_ms`) and every saga write is conditional on it, so two
//!   concurrent repeats (e.g. a client retry while the first attempt is still
//!   running, on another orders instance) never interleave: the second waits
//!   for the first to finish and answers with its outcome, or answers
//!   UNAVAILABLE if it cannot wait that long. A crashed run's lease expires.
//! - **A caller giving up does not stop a run midway.** The gRPC layer runs the
//!   saga in its own task; compensations (Release) use their own timeout.
//!
//! If a state breaks these invariants (e.g. inventory released a reservation
//! while a charge may exist), the order stays PENDING, the run answers
//! INTERNAL and logs an error for an operator; it never guesses with money.

#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use mesh::{
    client::Channel,
    proto::{
        inventory::v1::{
            inventory_client::InventoryClient, CommitRequest, LineItem, ReleaseRequest,
            Reservation, ReservationState, ReserveRequest,
        },
        payments::v1::{
            payments_client::PaymentsClient, ChargeRequest, Payment, PaymentStatus, RefundRequest,
        },
        users::v1::{users_client::UsersClient, GetUserRequest, User},
    },
    storage::now_unix_ms,
};
use tonic::{Code, Status};

use crate::{
    deadline::{outgoing, CallBudget},
    domain::{
        charge_key, classify_failure, new_order_id, reservation_id, stock_rejection_reason,
        CallFailure, CancelStep, OrderStatus, PlaceOrder,
    },
    store::{Inserted, NewOrder, Order, Store, StoreError},
    Upstreams,
};

/// Why an order operation did not return an order. Mapped to gRPC statuses
/// in one place (`impl From<OrderError> for Status` in [`crate::grpc`]).
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The orders database failed or has no such order.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// users does not know the user (nothing was recorded).
    #[error("user {user_id} not found")]
    UserNotFound {
        /// The user.
        user_id: String,
    },
    /// The request_id was used for an order with other contents.
    #[error("request_id {request_id} was already used for a different order")]
    RequestReused {
        /// The request id.
        request_id: String,
    },
    /// The order was rejected (recorded as REJECTED with this reason).
    #[error("order rejected: {reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
    /// Another request is running this order's saga right now.
    #[error("order {order_id} is being placed by another request; retry with the same request_id")]
    Busy {
        /// The order.
        order_id: String,
    },
    /// An upstream call failed; the order stays PENDING and a repeat of
    /// PlaceOrder with the same request_id resumes it.
    #[error("cannot {step} ({service}: {}); order {order_id} is pending: retry with the same request_id", cause.message())]
    Pending {
        /// The order.
        order_id: String,
        /// What the saga was doing.
        step: &'static str,
        /// Which service failed.
        service: &'static str,
        /// The upstream status.
        cause: Status,
    },
    /// An upstream call failed before anything was recorded.
    #[error("{service} did not answer: {}", cause.message())]
    Upstream {
        /// Which service failed.
        service: &'static str,
        /// The upstream status.
        cause: Status,
    },
    /// CancelOrder on an order that is not confirmed.
    #[error("order {order_id} is {} and cannot be cancelled; only confirmed orders can", status.as_str())]
    NotCancellable {
        /// The order.
        order_id: String,
        /// Its status.
        status: OrderStatus,
    },
    /// The upstream state contradicts the saga's invariants; an operator must look.
    #[error("order {order_id} cannot be completed automatically: {detail}")]
    Inconsistent {
        /// The order.
        order_id: String,
        /// What is wrong.
        detail: String,
    },
}

impl OrderError {
    /// Whether the upstream failure behind this error was a timeout.
    pub fn timed_out(&self) -> bool {
        match self {
            OrderError::Pending { cause, .. } | OrderError::Upstream { cause, .. } => {
                matches!(cause.code(), Code::DeadlineExceeded | Code::Cancelled)
            }
            _ => false,
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
    per_call: Duration,
    lease: Duration,
}

/// What waiting for an order's lease gave.
enum Lease {
    /// This run holds it; the order as it is now.
    Held(Order),
    /// The order left PENDING meanwhile: this is the answer.
    Finished(Result<Order, OrderError>),
}

impl Saga {
    /// A saga over `store` calling `upstreams`, each call taking at most
    /// `per_call`.
    pub fn new(store: Store, upstreams: Upstreams, per_call: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            users: UsersClient::new(upstreams.users),
            inventory: InventoryClient::new(upstreams.inventory),
            payments: PaymentsClient::new(upstreams.payments),
            per_call,
            // Longer than any run: a run makes at most six calls of `per_call`.
            lease: (per_call * 10).max(Duration::from_secs(1)),
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
            Inserted::New(order) => {
                tracing::info!(order_id = %order.order_id, request_id = %order.request_id, "order recorded as pending");
                self.run(order, &owner, &budget).await
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
        let owner = new_owner();
        match self.lease(&order.order_id, &owner, budget).await? {
            Lease::Finished(result) => result,
            Lease::Held(order) => {
                tracing::info!(order_id = %order.order_id, "resuming a pending order");
                self.run(order, &owner, budget).await
            }
        }
    }

    /// Takes the order's lease, waiting (bounded by the caller's deadline
    /// and the lease length) while another run holds it.
    async fn lease(
        &self,
        order_id: &str,
        owner: &str,
        budget: &CallBudget,
    ) -> Result<Lease, OrderError> {
        let give_up = tokio::time::Instant::now() + budget.remaining().min(self.lease);
        loop {
            let now = now_unix_ms();
            if self
                .store
                .try_lease(order_id, owner, now, now + self.lease_ms())
                .await?
            {
                return Ok(Lease::Held(self.store.get(order_id).await?));
            }
            let current = self.store.get(order_id).await?;
            if current.status != OrderStatus::Pending {
                return Ok(Lease::Finished(outcome(current)));
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(OrderError::Busy {
                    order_id: order_id.to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the saga steps holding the lease, then gives the lease up.
    async fn run(
        &self,
        order: Order,
        owner: &str,
        budget: &CallBudget,
    ) -> Result<Order, OrderError> {
        let order_id = order.order_id.clone();
        let result = self.steps(order, owner, budget).await;
        // Confirm/reject already freed it; otherwise let the next repeat in at once.
        if let Err(error) = self.store.release_lease(&order_id, owner).await {
            tracing::warn!(%order_id, %error, "cannot give the order's lease up; it will expire");
        }
        match &result {
            Ok(order) => tracing::info!(%order_id, status = order.status.as_str(), "order placed"),
            Err(OrderError::Inconsistent { detail, .. }) => {
                tracing::error!(%order_id, %detail, "order needs an operator")
            }
            Err(error) => tracing::info!(%order_id, %error, "order not placed"),
        }
        result
    }

    async fn steps(
        &self,
        mut order: Order,
        owner: &str,
        budget: &CallBudget,
    ) -> Result<Order, OrderError> {
        let (reservation_id, reservation) = self.reserve(&mut order, owner, budget).await?;
        if !order.charge_sent {
            self.record_prices(&mut order, owner, &reservation).await?;
        }
        let payment = self
            .charge(&mut order, owner, &reservation_id, budget)
            .await?;
        self.commit(&order, owner, &reservation_id, &payment, budget)
            .await
    }

    /// Step 1: a live reservation of the order's items.
    async fn reserve(
        &self,
        order: &mut Order,
        owner: &str,
        budget: &CallBudget,
    ) -> Result<(String, Reservation), OrderError> {
        // A released reservation moves to the next attempt; more than a couple
        // in one run means something else releases our reservations.
        for _ in 0..3 {
            let id = reservation_id(&order.request_id, order.reservation_attempt);
            let request = ReserveRequest {
                reservation_id: id.clone(),
                items: order
                    .lines
                    .iter()
                    .map(|line| LineItem {
                        sku: line.sku.clone(),
                        quantity: line.quantity,
                    })
                    .collect(),
            };
            let answer = match outgoing(request, budget) {
                Ok(request) => self.call_reserve(request).await,
                Err(deadline) => Err(deadline),
            };
            match answer {
                Ok(reservation) => match reservation.state() {
                    ReservationState::Reserved | ReservationState::Committed => {
                        return Ok((id, reservation))
                    }
                    ReservationState::Released if !order.charge_sent => {
                        order.reservation_attempt += 1;
                        self.store
                            .set_reservation_attempt(
                                &order.order_id,
                                owner,
                                order.reservation_attempt,
                                now_unix_ms(),
                            )
                            .await?;
                    }
                    state => {
                        return Err(inconsistent(
                            order,
                            format!(
                                "reservation {id} is {} while a charge may exist",
                                state.as_str_name()
                            ),
                        ))
                    }
                },
                Err(status) => {
                    return match classify_failure(&status) {
                        CallFailure::Refused if !order.charge_sent => {
                            let reason = stock_rejection_reason(status.code(), status.message());
                            self.store
                                .reject(&order.order_id, owner, &reason, now_unix_ms())
                                .await?;
                            Err(OrderError::Rejected { reason })
                        }
                        CallFailure::Refused => Err(inconsistent(
                            order,
                            format!(
                                "inventory refused reservation {id} while a charge may exist: {}",
                                status.message()
                            ),
                        )),
                        CallFailure::NotApplied | CallFailure::Unknown => {
                            Err(pending(order, "reserve stock", "inventory", status))
                        }
                    };
                }
            }
        }
        Err(inconsistent(
            order,
            "inventory released its reservations repeatedly".to_owned(),
        ))
    }

    /// Stores inventory's prices and total on the order (before any charge).
    async fn record_prices(
        &self,
        order: &mut Order,
        owner: &str,
        reservation: &Reservation,
    ) -> Result<(), OrderError> {
        let mut prices = Vec::with_capacity(order.lines.len());
        for line in &order.lines {
            let Some(reserved) = reservation.items.iter().find(|r| r.sku == line.sku) else {
                let detail = format!(
                    "reservation {} has no line for sku {}",
                    reservation.reservation_id, line.sku
                );
                return Err(inconsistent(order, detail));
            };
            prices.push((line.sku.clone(), reserved.unit_price_cents));
        }
        for (line, (_, price)) in order.lines.iter_mut().zip(&prices) {
            line.unit_price_cents = *price;
        }
        if reservation.total_cents <= 0 {
            let detail = format!(
                "reservation {} has a total of {} cents",
                reservation.reservation_id, reservation.total_cents
            );
            return Err(inconsistent(order, detail));
        }
        order.total_cents = reservation.total_cents;
        self.store
            .record_prices(
                &order.order_id,
                owner,
                &prices,
                order.total_cents,
                now_unix_ms(),
            )
            .await?;
        Ok(())
    }

    /// Step 2: a captured payment, or the order rejected/left pending.
    async fn charge(
        &self,
        order: &mut Order,
        owner: &str,
        reservation_id: &str,
        budget: &CallBudget,
    ) -> Result<Payment, OrderError> {
        let was_sent = order.charge_sent;
        let request = ChargeRequest {
            idempotency_key: charge_key(&order.request_id),
            user_id: order.user_id.clone(),
            amount_cents: order.total_cents,
            currency: order.currency.clone(),
        };
        let request = match outgoing(request, budget) {
            Ok(request) => request,
            Err(deadline) => {
                // Not sent: nothing was charged by this run.
                if !was_sent {
                    self.release_best_effort(order, reservation_id).await;
                }
                return Err(pending(order, "charge the payment", "payments", deadline));
            }
        };
        if !was_sent {
            // Write-ahead: from here on a charge may exist.
            self.store
                .set_charge_sent(&order.order_id, owner, true, now_unix_ms())
                .await?;
            order.charge_sent = true;
        }
        match self.call_charge(request).await {
            Ok(payment) => match payment.status() {
                PaymentStatus::Captured => {
                    if order.payment_id != payment.payment_id {
                        self.store
                            .record_payment(
                                &order.order_id,
                                owner,
                                &payment.payment_id,
                                now_unix_ms(),
                            )
                            .await?;
                        order.payment_id = payment.payment_id.clone();
                    }
                    Ok(payment)
                }
                PaymentStatus::Declined => {
                    let reason = format!("payment declined: {}", payment.decline_reason);
                    self.release_then_reject(order, owner, reservation_id, reason)
                        .await
                }
                status => {
                    let detail = format!(
                        "payment {} is {} instead of captured or declined",
                        payment.payment_id,
                        status.as_str_name()
                    );
                    Err(inconsistent(order, detail))
                }
            },
            Err(status) => match classify_failure(&status) {
                CallFailure::Refused if !was_sent => {
                    // payments said no to the first Charge: nothing was charged.
                    self.store
                        .set_charge_sent(&order.order_id, owner, false, now_unix_ms())
                        .await?;
                    order.charge_sent = false;
                    let reason = format!("payment failed: {}", status.message());
                    self.release_then_reject(order, owner, reservation_id, reason)
                        .await
                }
                CallFailure::Refused => {
                    let detail =
                        format!("payments refused a repeated charge: {}", status.message());
                    Err(inconsistent(order, detail))
                }
                CallFailure::NotApplied => {
                    if !was_sent {
                        // Provably never charged: give the stock back.
                        self.release_best_effort(order, reservation_id).await;
                        self.store
                            .set_charge_sent(&order.order_id, owner, false, now_unix_ms())
                            .await?;
                        order.charge_sent = false;
                    }
                    Err(pending(order, "charge the payment", "payments", status))
                }
                CallFailure::Unknown => {
                    // The charge may have happened: keep the stock reserved.
                    tracing::warn!(order_id = %order.order_id, %status, "charge outcome unknown; keeping the reservation");
                    Err(pending(order, "charge the payment", "payments", status))
                }
            },
        }
    }

    /// Releases the reservation; once released, records the rejection.
    async fn release_then_reject<T>(
        &self,
        order: &Order,
        owner: &str,
        reservation_id: &str,
        reason: String,
    ) -> Result<T, OrderError> {
        if let Err(status) = self.release(reservation_id).await {
            return Err(pending(
                order,
                "release the reserved stock",
                "inventory",
                status,
            ));
        }
        self.store
            .reject(&order.order_id, owner, &reason, now_unix_ms())
            .await?;
        Err(OrderError::Rejected { reason })
    }

    async fn release(&self, reservation_id: &str) -> Result<(), Status> {
        // A compensation: its own timeout, whatever is left of the caller's.
        let request = outgoing(
            ReleaseRequest {
                reservation_id: reservation_id.to_owned(),
            },
            &CallBudget::detached(self.per_call),
        )?;
        self.call_release(request).await
    }

    async fn release_best_effort(&self, order: &Order, reservation_id: &str) {
        match self.release(reservation_id).await {
            Ok(()) => {
                tracing::info!(order_id = %order.order_id, %reservation_id, "released the reservation")
            }
            Err(status) => tracing::warn!(
                order_id = %order.order_id,
                %reservation_id,
                %status,
                "cannot release the reservation now; the next attempt finds and reuses or releases it"
            ),
        }
    }

    /// Step 3: the sale is committed and the order confirmed.
    async fn commit(
        &self,
        order: &Order,
        owner: &str,
        reservation_id: &str,
        payment: &Payment,
        budget: &CallBudget,
    ) -> Result<Order, OrderError> {
        let request = CommitRequest {
            reservation_id: reservation_id.to_owned(),
        };
        let answer = match outgoing(request, budget) {
            Ok(request) => self.call_commit(request).await,
            Err(deadline) => Err(deadline),
        };
        match answer {
            Ok(reservation) if reservation.state() == ReservationState::Committed => Ok(self
                .store
                .confirm(&order.order_id, owner, &payment.payment_id, now_unix_ms())
                .await?),
            Ok(reservation) => {
                let detail = format!(
                    "reservation {reservation_id} is {} after committing it",
                    reservation.state().as_str_name()
                );
                Err(inconsistent(order, detail))
            }
            Err(status) if classify_failure(&status) == CallFailure::Refused => {
                let detail = format!(
                    "inventory refused to commit reservation {reservation_id} after payment {} was captured: {}",
                    payment.payment_id,
                    status.message()
                );
                Err(inconsistent(order, detail))
            }
            Err(status) => Err(pending(
                order,
                "commit the reserved stock",
                "inventory",
                status,
            )),
        }
    }

    /// users.GetUser: the user exists.
    async fn check_user(&self, user_id: &str, budget: &CallBudget) -> Result<(), OrderError> {
        let request = outgoing(
            GetUserRequest {
                user_id: user_id.to_owned(),
            },
            budget,
        )
        .map_err(|cause| OrderError::Upstream {
            service: "users",
            cause,
        })?;
        match self.call_get_user(request).await {
            Ok(_) => Ok(()),
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

    /// CancelOrder: refunds a confirmed order and marks it CANCELLED.
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
        let request = outgoing(
            RefundRequest {
                payment_id: order.payment_id.clone(),
            },
            &budget,
        )
        .map_err(|cause| OrderError::Upstream {
            service: "payments",
            cause,
        })?;
        match self.call_refund(request).await {
            Ok(payment) if payment.status() == PaymentStatus::Refunded => {}
            Ok(payment) => {
                let detail = format!(
                    "payment {} is {} after refunding it",
                    order.payment_id,
                    payment.status().as_str_name()
                );
                return Err(inconsistent(&order, detail));
            }
            Err(status) if classify_failure(&status) == CallFailure::Refused => {
                let detail = format!(
                    "payments refused to refund {}: {}",
                    order.payment_id,
                    status.message()
                );
                return Err(inconsistent(&order, detail));
            }
            Err(cause) => {
                return Err(OrderError::Upstream {
                    service: "payments",
                    cause,
                })
            }
        }
        // false: a concurrent cancel got there first; both refunds were one.
        self.store.cancel(order_id, now_unix_ms()).await?;
        tracing::info!(%order_id, payment_id = %order.payment_id, "order cancelled and refunded");
        Ok(self.store.get(order_id).await?)
    }

    // The upstream calls, answering the response message or the status.

    async fn call_get_user(&self, request: tonic::Request<GetUserRequest>) -> Result<User, Status> {
        self.users
            .clone()
            .get_user(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn call_reserve(
        &self,
        request: tonic::Request<ReserveRequest>,
    ) -> Result<Reservation, Status> {
        self.inventory
            .clone()
            .reserve(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn call_release(&self, request: tonic::Request<ReleaseRequest>) -> Result<(), Status> {
        self.inventory.clone().release(request).await.map(|_| ())
    }

    async fn call_commit(
        &self,
        request: tonic::Request<CommitRequest>,
    ) -> Result<Reservation, Status> {
        self.inventory
            .clone()
            .commit(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn call_charge(&self, request: tonic::Request<ChargeRequest>) -> Result<Payment, Status> {
        self.payments
            .clone()
            .charge(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn call_refund(&self, request: tonic::Request<RefundRequest>) -> Result<Payment, Status> {
        self.payments
            .clone()
            .refund(request)
            .await
            .map(tonic::Response::into_inner)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 2)
    }
}

/// The answer to a repeat of a finished order.
fn outcome(order: Order) -> Result<Order, OrderError> {
    match order.status {
        OrderStatus::Rejected => Err(OrderError::Rejected {
            reason: order.rejection_reason,
        }),
        _ => Ok(order),
    }
}

fn pending(order: &Order, step: &'static str, service: &'static str, cause: Status) -> OrderError {
    OrderError::Pending {
        order_id: order.order_id.clone(),
        step,
        service,
        cause,
    }
}

fn inconsistent(order: &Order, detail: String) -> OrderError {
    OrderError::Inconsistent {
        order_id: order.order_id.clone(),
        detail,
    }
}

fn new_owner() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
