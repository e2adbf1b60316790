//! The upstream calls, each answering the response message or the status,
//! with the timeout of the run's budget (`grpc-timeout`).

use mesh::proto::{
    inventory::v1::{
        CommitRequest, GetReservationRequest, ReleaseRequest, Reservation, ReserveRequest,
        RestockRequest,
    },
    payments::v1::{ChargeRequest, GetPaymentRequest, Payment, RefundRequest},
    users::v1::{GetUserRequest, User},
};
use tonic::Status;

use super::Saga;
use mesh::deadline::{outgoing, CallBudget};

impl Saga {
    pub(super) async fn get_user(
        &self,
        message: GetUserRequest,
        budget: &CallBudget,
    ) -> Result<User, Status> {
        let request = outgoing(message, budget)?;
        Ok(self.users.clone().get_user(request).await?.into_inner())
    }

    pub(super) async fn reserve_stock(
        &self,
        message: ReserveRequest,
        budget: &CallBudget,
    ) -> Result<Reservation, Status> {
        let request = outgoing(message, budget)?;
        Ok(self.inventory.clone().reserve(request).await?.into_inner())
    }

    pub(super) async fn release_stock(
        &self,
        reservation_id: &str,
        budget: &CallBudget,
    ) -> Result<Reservation, Status> {
        let request = outgoing(
            ReleaseRequest {
                reservation_id: reservation_id.to_owned(),
            },
            budget,
        )?;
        Ok(self.inventory.clone().release(request).await?.into_inner())
    }

    pub(super) async fn commit_stock(
        &self,
        reservation_id: &str,
        budget: &CallBudget,
    ) -> Result<Reservation, Status> {
        let request = outgoing(
            CommitRequest {
                reservation_id: reservation_id.to_owned(),
            },
            budget,
        )?;
        Ok(self.inventory.clone().commit(request).await?.into_inner())
    }

    pub(super) async fn get_reservation(
        &self,
        reservation_id: &str,
        budget: &CallBudget,
    ) -> Result<Reservation, Status> {
        let request = outgoing(
            GetReservationRequest {
                reservation_id: reservation_id.to_owned(),
            },
            budget,
        )?;
        Ok(self
            .inventory
            .clone()
            .get_reservation(request)
            .await?
            .into_inner())
    }

    pub(super) async fn get_payment(
        &self,
        payment_id: &str,
        budget: &CallBudget,
    ) -> Result<Payment, Status> {
        let request = outgoing(
            GetPaymentRequest {
                payment_id: payment_id.to_owned(),
            },
            budget,
        )?;
        Ok(self
            .payments
            .clone()
            .get_payment(request)
            .await?
            .into_inner())
    }

    pub(super) async fn restock(
        &self,
        reservation_id: &str,
        budget: &CallBudget,
    ) -> Result<Reservation, Status> {
        let request = outgoing(
            RestockRequest {
                reservation_id: reservation_id.to_owned(),
            },
            budget,
        )?;
        Ok(self.inventory.clone().restock(request).await?.into_inner())
    }

    pub(super) async fn charge_payment(
        &self,
        message: ChargeRequest,
        budget: &CallBudget,
    ) -> Result<Payment, Status> {
        let request = outgoing(message, budget)?;
        Ok(self.payments.clone().charge(request).await?.into_inner())
    }

    pub(super) async fn refund(
        &self,
        payment_id: &str,
        budget: &CallBudget,
    ) -> Result<Payment, Status> {
        let request = outgoing(
            RefundRequest {
                payment_id: payment_id.to_owned(),
            },
            budget,
        )?;
        Ok(self.payments.clone().refund(request).await?.into_inner())
    }
}
