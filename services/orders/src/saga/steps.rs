//! The saga's steps: each reads the persisted step, makes the remote calls it
//! allows, and records the next step (fenced) before anything further
//! happens. See the state machine in [`super`].

use mesh::{
    proto::{
        inventory::v1::{LineItem, Reservation, ReservationState, ReserveRequest},
        payments::v1::{ChargeRequest, PaymentStatus},
    },
    storage::now_unix_ms,
};
use tonic::{Code, Status};

use super::{millis, outcome, OrderError, Saga};
use mesh::deadline::CallBudget;

use crate::{
    domain::{
        bounded_reason, classify_failure, stock_rejection_reason, CallFailure, ParkReason, Step,
    },
    store::{Fence, Order, Priced},
};

/// Transient failures one run retries itself (within the caller's deadline)
/// before leaving the order to the recovery loop.
const RETRIES_PER_RUN: u32 = 3;
/// The first pause before such a retry is the upstream timeout divided by
/// this; it doubles.
const FIRST_RETRY_PAUSE_DIVISOR: u32 = 4;
/// More reservation attempts than this in one order means something else
/// keeps releasing its reservations.
const MAX_RESERVATION_ATTEMPTS: i64 = 20;

impl Saga {
    /// Runs steps until the order is final, or a step fails in a way only
    /// time can fix (then the order stays at that step for the next run).
    ///
    /// The lease outlives every step that starts under it: each step that
    /// moves the order on renews the lease in its own fenced write (the
    /// next step starts right after that write), so a separate renewal is
    /// written only before a step that does not follow one: the first step
    /// of a resumed order (`just_leased` false: the lease was taken before a
    /// read) and a retry after its pause.
    pub(super) async fn drive(
        &self,
        mut order: Order,
        fence: &Fence,
        budget: &CallBudget,
        just_leased: bool,
    ) -> Result<Order, OrderError> {
        let mut retries = 0;
        let mut lease_fresh = just_leased;
        loop {
            if order.step == Step::Done || !order.status.is_unfinished() {
                return outcome(order);
            }
            if !lease_fresh {
                self.store.renew(fence, self.lease_from_now()).await?;
            }
            // Every Ok below wrote the next step with a renewed lease (or
            // made the order final); an error leaves it as it was.
            lease_fresh = false;
            let step = match order.step {
                Step::Reserve => self.reserve(&mut order, fence, budget).await,
                Step::Charge => self.charge(&mut order, fence, budget).await,
                Step::Commit => self.commit(&mut order, fence, budget).await,
                Step::Undo => self.undo(&mut order, fence).await,
                Step::Cancel => self.cancel_step(&mut order, fence, budget).await,
                Step::Done => continue,
            };
            match step {
                Ok(()) => {
                    retries = 0;
                    lease_fresh = true;
                }
                Err(error) if error.is_transient() && retries < RETRIES_PER_RUN => {
                    let pause =
                        self.options.per_call / FIRST_RETRY_PAUSE_DIVISOR * 2u32.pow(retries);
                    if budget.remaining() <= pause + self.options.per_call / 4 {
                        return Err(error);
                    }
                    retries += 1;
                    tracing::debug!(order_id = %order.order_id, %error, "retrying the step");
                    tokio::time::sleep(pause).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// RESERVE: a live reservation of the order's items, then CHARGE.
    async fn reserve(
        &self,
        order: &mut Order,
        fence: &Fence,
        budget: &CallBudget,
    ) -> Result<(), OrderError> {
        let id = order.reservation_id();
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
            ttl_ms: millis(self.options.reservation_ttl),
            currency: order.currency.clone(),
        };
        let reservation = match self.reserve_stock(request, budget).await {
            Ok(reservation) => reservation,
            Err(status) => {
                return match classify_failure(&status) {
                    // All-or-nothing: a refused Reserve holds nothing.
                    CallFailure::Refused => {
                        let reason = stock_rejection_reason(status.code(), status.message());
                        *order = self
                            .store
                            .reject(fence, order, &reason, now_unix_ms())
                            .await?;
                        Ok(())
                    }
                    _ => Err(pending(order, "reserve stock", "inventory", status)),
                };
            }
        };
        match reservation.state() {
            ReservationState::Reserved => self.record_prices(order, fence, &reservation).await,
            // Expired or released by an earlier run: never reused.
            ReservationState::Released if order.reservation_attempt < MAX_RESERVATION_ATTEMPTS => {
                order.reservation_attempt += 1;
                self.store
                    .next_attempt(
                        fence,
                        order.reservation_attempt,
                        now_unix_ms(),
                        self.lease_from_now(),
                    )
                    .await?;
                Ok(())
            }
            state => Err(inconsistent(
                order,
                ParkReason::ReservationState,
                format!(
                    "reservation {id} is {} before any charge (attempt {})",
                    state.as_str_name(),
                    order.reservation_attempt
                ),
            )),
        }
    }

    /// Stores inventory's prices, total and currency on the order: CHARGE.
    async fn record_prices(
        &self,
        order: &mut Order,
        fence: &Fence,
        reservation: &Reservation,
    ) -> Result<(), OrderError> {
        let mut prices = Vec::with_capacity(order.lines.len());
        for line in &order.lines {
            let Some(reserved) = reservation.items.iter().find(|r| r.sku == line.sku) else {
                let detail = format!(
                    "reservation {} has no line for sku {}",
                    reservation.reservation_id, line.sku
                );
                return Err(inconsistent(order, ParkReason::ReservationContent, detail));
            };
            prices.push((line.sku.clone(), reserved.unit_price_cents));
        }
        if reservation.total_cents <= 0 || reservation.currency.is_empty() {
            let detail = format!(
                "reservation {} has a total of {} cents in {:?}",
                reservation.reservation_id, reservation.total_cents, reservation.currency
            );
            return Err(inconsistent(order, ParkReason::ReservationContent, detail));
        }
        let priced = Priced {
            prices,
            total_cents: reservation.total_cents,
            currency: reservation.currency.clone(),
            now_unix_ms: now_unix_ms(),
            lease_until_unix_ms: self.lease_from_now(),
        };
        self.store.priced(fence, &priced).await?;
        for (line, (_, price)) in order.lines.iter_mut().zip(&priced.prices) {
            line.unit_price_cents = *price;
        }
        order.total_cents = reservation.total_cents;
        order.currency = reservation.currency.clone();
        order.step = Step::Charge;
        Ok(())
    }

    /// CHARGE: the payment's fate, always learnt by re-sending the same
    /// Charge: captured → COMMIT, declined or refused → UNDO.
    pub(super) async fn charge(
        &self,
        order: &mut Order,
        fence: &Fence,
        budget: &CallBudget,
    ) -> Result<(), OrderError> {
        let request = ChargeRequest {
            idempotency_key: order.charge_key(),
            user_id: order.user_id.clone(),
            amount_cents: order.total_cents,
            currency: order.currency.clone(),
        };
        match self.charge_payment(request, budget).await {
            Ok(payment) => match payment.status() {
                PaymentStatus::Captured => {
                    self.store
                        .captured(
                            fence,
                            &payment.payment_id,
                            now_unix_ms(),
                            self.lease_from_now(),
                        )
                        .await?;
                    order.payment_id = payment.payment_id;
                    order.step = Step::Commit;
                    Ok(())
                }
                PaymentStatus::Declined => {
                    let reason = format!("payment declined: {}", payment.decline_reason);
                    self.start_undo(order, fence, reason).await
                }
                status => {
                    let detail = format!(
                        "payment {} is {} instead of captured or declined",
                        payment.payment_id,
                        status.as_str_name()
                    );
                    Err(inconsistent(order, ParkReason::PaymentState, detail))
                }
            },
            // payments said no: no charge exists under this key.
            Err(status) if classify_failure(&status) == CallFailure::Refused => {
                let reason = format!("payment failed: {}", status.message());
                self.start_undo(order, fence, reason).await
            }
            // Unknown or not applied: the same Charge is sent again later.
            Err(status) => {
                if classify_failure(&status) == CallFailure::Unknown {
                    let status = mesh::bounded::message(&status.to_string());
                    tracing::warn!(order_id = %order.order_id, %status, "charge outcome unknown; keeping the reservation");
                }
                Err(pending(order, "charge the payment", "payments", status))
            }
        }
    }

    /// COMMIT: the sale, then CONFIRMED; an expired reservation means the
    /// sale cannot happen: UNDO refunds the payment.
    async fn commit(
        &self,
        order: &mut Order,
        fence: &Fence,
        budget: &CallBudget,
    ) -> Result<(), OrderError> {
        let id = order.reservation_id();
        match self.commit_stock(&id, budget).await {
            Ok(reservation) if reservation.state() == ReservationState::Committed => {
                *order = self.store.confirm(fence, order, now_unix_ms()).await?;
                Ok(())
            }
            Ok(reservation) => {
                let detail = format!(
                    "reservation {id} is {} after committing it",
                    reservation.state().as_str_name()
                );
                Err(inconsistent(order, ParkReason::ReservationState, detail))
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                let reason = format!(
                    "the stock could not be kept until the payment was taken ({}); the payment is refunded",
                    status.message()
                );
                self.start_undo(order, fence, reason).await
            }
            Err(status) if classify_failure(&status) == CallFailure::Refused => {
                let detail = format!(
                    "inventory refused to commit reservation {id} after payment {} was captured: {}",
                    order.payment_id,
                    status.message()
                );
                Err(inconsistent(order, ParkReason::InventoryRefused, detail))
            }
            Err(status) => Err(pending(
                order,
                "commit the reserved stock",
                "inventory",
                status,
            )),
        }
    }

    /// Records UNDO with `reason` (before any compensation is sent).
    async fn start_undo(
        &self,
        order: &mut Order,
        fence: &Fence,
        reason: String,
    ) -> Result<(), OrderError> {
        let reason = bounded_reason(&reason);
        self.store
            .undo(fence, &reason, now_unix_ms(), self.lease_from_now())
            .await?;
        order.rejection_reason = reason;
        order.step = Step::Undo;
        Ok(())
    }

    /// UNDO: look at the reservation, refund the captured payment (if any),
    /// release the reservation, then REJECTED. Compensations get their own
    /// timeout, whatever is left of the caller's.
    ///
    /// Before any refund the reservation's real state is read: if it is
    /// COMMITTED the sale happened after all (a Commit whose answer said
    /// otherwise, or a late one of a stale run), and refunding would leave
    /// sold units unpaid. See [`Saga::settle_a_committed_sale`].
    async fn undo(&self, order: &mut Order, fence: &Fence) -> Result<(), OrderError> {
        let budget = CallBudget::detached(self.options.per_call);
        let id = order.reservation_id();
        if !order.payment_id.is_empty() {
            match self.get_reservation(&id, &budget).await {
                Ok(reservation) if reservation.state() == ReservationState::Committed => {
                    return self.settle_a_committed_sale(order, fence, &budget).await;
                }
                Ok(_) => {}
                // Never reserved under this id: nothing was sold.
                Err(status) if status.code() == Code::NotFound => {}
                Err(status) => {
                    return Err(pending(
                        order,
                        "read the reservation before refunding",
                        "inventory",
                        status,
                    ))
                }
            }
            self.refund_payment(order, &budget).await?;
        }
        match self.release_stock(&id, &budget).await {
            Ok(reservation) if reservation.state() == ReservationState::Released => {}
            Ok(reservation) => {
                let detail = format!(
                    "reservation {id} is {} while the order is being rejected",
                    reservation.state().as_str_name()
                );
                return Err(inconsistent(order, ParkReason::ReservationState, detail));
            }
            // Nothing held under this id.
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) if classify_failure(&status) == CallFailure::Refused => {
                let detail = format!("inventory refused to release {id}: {}", status.message());
                return Err(inconsistent(order, ParkReason::InventoryRefused, detail));
            }
            Err(status) => {
                return Err(pending(
                    order,
                    "release the reserved stock",
                    "inventory",
                    status,
                ))
            }
        }
        let reason = order.rejection_reason.clone();
        *order = self
            .store
            .reject(fence, order, &reason, now_unix_ms())
            .await?;
        Ok(())
    }

    /// UNDO found the reservation COMMITTED. With the payment still
    /// captured the sale stands: CONFIRMED. With the payment already
    /// refunded (an UNDO from before inventory decided expiry in one write),
    /// the units go back to stock and the order is REJECTED: either way
    /// nothing is sold unpaid and no money is kept for nothing.
    async fn settle_a_committed_sale(
        &self,
        order: &mut Order,
        fence: &Fence,
        budget: &CallBudget,
    ) -> Result<(), OrderError> {
        let id = order.reservation_id();
        let payment = match self.get_payment(&order.payment_id, budget).await {
            Ok(payment) => payment,
            Err(status) => {
                return Err(pending(
                    order,
                    "read the payment of a committed sale",
                    "payments",
                    status,
                ))
            }
        };
        match payment.status() {
            PaymentStatus::Captured => {
                *order = self.store.confirm(fence, order, now_unix_ms()).await?;
                tracing::info!(order_id = %order.order_id, reservation_id = %id, "the reservation was committed after all: order confirmed, payment kept");
                Ok(())
            }
            PaymentStatus::Refunded => {
                self.restock_units(order, &id, budget).await?;
                let reason = order.rejection_reason.clone();
                *order = self
                    .store
                    .reject(fence, order, &reason, now_unix_ms())
                    .await?;
                tracing::info!(order_id = %order.order_id, reservation_id = %id, "a committed reservation of a refunded order was restocked: order rejected");
                Ok(())
            }
            status => {
                let detail = format!(
                    "reservation {id} is COMMITTED and payment {} is {}",
                    order.payment_id,
                    status.as_str_name()
                );
                Err(inconsistent(order, ParkReason::PaymentState, detail))
            }
        }
    }

    /// inventory.Restock of reservation `id`: RESTOCKED, or why not.
    pub(super) async fn restock_units(
        &self,
        order: &Order,
        id: &str,
        budget: &CallBudget,
    ) -> Result<(), OrderError> {
        match self.restock(id, budget).await {
            Ok(reservation) if reservation.state() == ReservationState::Restocked => Ok(()),
            Ok(reservation) => {
                let detail = format!(
                    "reservation {id} is {} after restocking it",
                    reservation.state().as_str_name()
                );
                Err(inconsistent(order, ParkReason::ReservationState, detail))
            }
            Err(status) if classify_failure(&status) == CallFailure::Refused => {
                let detail = format!("inventory refused to restock {id}: {}", status.message());
                Err(inconsistent(order, ParkReason::InventoryRefused, detail))
            }
            Err(status) => Err(pending(
                order,
                "return the units to stock",
                "inventory",
                status,
            )),
        }
    }

    /// payments.Refund of the order's payment: REFUNDED, or why not.
    pub(super) async fn refund_payment(
        &self,
        order: &Order,
        budget: &CallBudget,
    ) -> Result<(), OrderError> {
        match self.refund(&order.payment_id, budget).await {
            Ok(payment) if payment.status() == PaymentStatus::Refunded => Ok(()),
            Ok(payment) => {
                let detail = format!(
                    "payment {} is {} after refunding it",
                    order.payment_id,
                    payment.status().as_str_name()
                );
                Err(inconsistent(order, ParkReason::PaymentState, detail))
            }
            Err(status) if classify_failure(&status) == CallFailure::Refused => {
                let detail = format!(
                    "payments refused to refund {}: {}",
                    order.payment_id,
                    status.message()
                );
                Err(inconsistent(order, ParkReason::PaymentsRefused, detail))
            }
            Err(status) => Err(pending(order, "refund the payment", "payments", status)),
        }
    }
}

pub(super) fn pending(
    order: &Order,
    step: &'static str,
    service: &'static str,
    cause: Status,
) -> OrderError {
    OrderError::Pending {
        order_id: order.order_id.clone(),
        step,
        service,
        cause,
    }
}

pub(super) fn inconsistent(order: &Order, reason: ParkReason, detail: String) -> OrderError {
    OrderError::Inconsistent {
        order_id: order.order_id.clone(),
        reason,
        // It quotes upstream answers: bounded before it is logged or stored.
        detail: bounded_reason(&detail),
    }
}
