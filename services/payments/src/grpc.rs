//! The tonic service: validates, calls the store, and maps every error to a
//! gRPC status in one place ([`impl From<StoreError> for Status`](StoreError)).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use mesh::proto::payments::v1::{
    self as proto, payments_server::Payments, ChargeRequest, GetPaymentRequest, RefundRequest,
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, DeclineLimits},
    store::{ChargeOutcome, Payment, Store, StoreError},
};

/// How many `Charge` calls this process answered by recording a new payment,
/// and how many by returning an existing one (an idempotent replay). Kept for
/// the metrics exporter; logged at debug meanwhile.
#[derive(Debug, Default)]
pub struct ChargeCounters {
    /// Calls that inserted a new payment.
    pub created: AtomicU64,
    /// Calls that returned the payment already recorded for their key.
    pub replayed: AtomicU64,
}

/// The `mesh.payments.v1.Payments` implementation.
#[derive(Debug, Clone)]
pub struct PaymentsService {
    store: Store,
    limits: DeclineLimits,
    counters: Arc<ChargeCounters>,
}

impl PaymentsService {
    /// A service over `store` that declines charges above their currency's limit.
    pub fn new(store: Store, limits: DeclineLimits) -> Self {
        Self {
            store,
            limits,
            counters: Arc::default(),
        }
    }

    /// The per-process charge counters.
    pub fn counters(&self) -> Arc<ChargeCounters> {
        Arc::clone(&self.counters)
    }
}

#[tonic::async_trait]
impl Payments for PaymentsService {
    async fn charge(
        &self,
        request: Request<ChargeRequest>,
    ) -> Result<Response<proto::Payment>, Status> {
        let charge = domain::validate_charge(request.get_ref())?;
        let decision = self.limits.decide(charge.amount_cents, &charge.currency);
        // The write and its count run to the end in their own task: once a
        // charge is queued it is committed whether or not the caller is
        // still waiting (a retry elsewhere may have answered it already),
        // and a committed charge is always counted.
        let (store, counters) = (self.store.clone(), Arc::clone(&self.counters));
        let recorded = tokio::spawn(async move {
            let outcome = store
                .charge(
                    &domain::new_payment_id(),
                    &charge,
                    &decision,
                    mesh::storage::now_unix_ms(),
                )
                .await?;
            let counts = match &outcome {
                ChargeOutcome::Created(_) => (
                    counters.created.fetch_add(1, Ordering::Relaxed) + 1,
                    counters.replayed.load(Ordering::Relaxed),
                ),
                ChargeOutcome::Existing(_) => (
                    counters.created.load(Ordering::Relaxed),
                    counters.replayed.fetch_add(1, Ordering::Relaxed) + 1,
                ),
            };
            Ok::<_, StoreError>((outcome, counts))
        });
        let (outcome, (created, replayed)) = recorded
            .await
            .map_err(|error| Status::internal(format!("the charge's task failed: {error}")))??;
        let payment = outcome.payment();
        tracing::debug!(
            payment_id = %payment.payment_id,
            status = payment.status.as_str(),
            new = matches!(outcome, ChargeOutcome::Created(_)),
            charges_created = created,
            charges_replayed = replayed,
            "charge"
        );
        Ok(Response::new(to_proto(payment)))
    }

    async fn refund(
        &self,
        request: Request<RefundRequest>,
    ) -> Result<Response<proto::Payment>, Status> {
        let payment_id = &request.get_ref().payment_id;
        domain::validate_payment_id("RefundRequest", payment_id)?;
        let payment = self
            .store
            .refund(payment_id, mesh::storage::now_unix_ms())
            .await?;
        tracing::debug!(payment_id = %payment.payment_id, "refunded");
        Ok(Response::new(to_proto(&payment)))
    }

    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<proto::Payment>, Status> {
        let payment_id = &request.get_ref().payment_id;
        domain::validate_payment_id("GetPaymentRequest", payment_id)?;
        let payment = self.store.get(payment_id).await?;
        Ok(Response::new(to_proto(&payment)))
    }
}

/// The one mapping of store errors to what callers see.
impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { .. } => Status::not_found(error.to_string()),
            StoreError::KeyReused { .. } => Status::invalid_argument(error.to_string()),
            StoreError::Declined { .. } => Status::failed_precondition(error.to_string()),
            StoreError::Write(write) if write.is_transient() => {
                tracing::warn!(error = %write, "payments write not committed");
                Status::unavailable("the payments database is busy; try again")
            }
            StoreError::Corrupt(_)
            | StoreError::Database(_)
            | StoreError::Sqlite(_)
            | StoreError::Write(_) => {
                // The cause goes to the log; callers do not see SQL.
                tracing::error!(%error, "payments storage failure");
                Status::internal("payments storage failure; see the service log")
            }
        }
    }
}

fn to_proto(payment: &Payment) -> proto::Payment {
    proto::Payment {
        payment_id: payment.payment_id.clone(),
        idempotency_key: payment.idempotency_key.clone(),
        user_id: payment.user_id.clone(),
        amount_cents: payment.amount_cents,
        currency: payment.currency.clone(),
        status: payment.status.to_proto() as i32,
        decline_reason: payment.decline_reason.clone(),
        created_at_unix_ms: payment.created_at_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    async fn service(dir: &std::path::Path, limit: i64) -> PaymentsService {
        let pool = mesh::storage::open("payments", None, dir, &crate::MIGRATOR)
            .await
            .unwrap();
        PaymentsService::new(
            Store::new(pool).expect("start the payments writer"),
            DeclineLimits::uniform(limit),
        )
    }

    fn charge(key: &str, amount: i64) -> Request<ChargeRequest> {
        Request::new(ChargeRequest {
            idempotency_key: key.into(),
            user_id: "u_1".into(),
            amount_cents: amount,
            currency: "usd".into(),
        })
    }

    #[tokio::test]
    async fn counters_tell_new_charges_from_replays() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path(), 1000).await;
        let first = service.charge(charge("a", 10)).await.unwrap().into_inner();
        assert_eq!(first.currency, "USD");
        assert_eq!(first.status(), proto::PaymentStatus::Captured);
        let replay = service.charge(charge("a", 10)).await.unwrap().into_inner();
        assert_eq!(replay, first);
        service.charge(charge("b", 10)).await.unwrap();
        let counters = service.counters();
        assert_eq!(counters.created.load(Ordering::Relaxed), 2);
        assert_eq!(counters.replayed.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_decline_is_a_normal_response_and_cannot_be_refunded() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path(), 1000).await;
        let declined = service
            .charge(charge("big", 1500))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(declined.status(), proto::PaymentStatus::Declined);
        assert_eq!(
            declined.decline_reason,
            "amount 1500 exceeds the limit of 1000"
        );
        let status = service
            .refund(Request::new(RefundRequest {
                payment_id: declined.payment_id.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            format!(
                "payment {} was declined; there is nothing to refund",
                declined.payment_id
            )
        );
    }

    #[test]
    fn a_write_that_may_succeed_later_is_unavailable() {
        let busy = StoreError::Write(mesh::storage::WriteError::QueueFull {
            database: "payments".into(),
            capacity: 1024,
        });
        let status = Status::from(busy);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "the payments database is busy; try again");
        let stopped = Status::from(StoreError::Write(mesh::storage::WriteError::Panicked {
            database: "payments".into(),
        }));
        assert_eq!(stopped.code(), Code::Internal);
    }

    #[test]
    fn storage_failures_do_not_leak_sql() {
        let status = Status::from(StoreError::Database(sqlx::Error::Protocol(
            "SELECT secret FROM payments".into(),
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
        assert_eq!(
            Status::from(StoreError::NotFound {
                payment_id: "pay_x".into()
            })
            .message(),
            "payment pay_x not found"
        );
    }
}
