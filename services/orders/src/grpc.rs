//! The tonic service: validates requests, runs the saga or the store, and
//! maps every error to a gRPC status in one place
//! ([`impl From<OrderError> for Status`](OrderError)).

use std::{sync::Arc, time::Duration};
use tracing::Instrument;

use mesh::proto::orders::v1::{
    self as proto, orders_server::Orders, CancelOrderRequest, GetOrderRequest, ListOrdersRequest,
    ListOrdersResponse, PlaceOrderRequest,
};
use tonic::{Request, Response, Status};

use mesh::deadline::CallBudget;

use crate::{
    domain::{self, PageKey},
    saga::{rejected_as_invalid, OrderError, Saga},
    store::{Order, StoreError},
};

/// The `mesh.orders.v1.Orders` implementation.
#[derive(Debug, Clone)]
pub struct OrdersService {
    saga: Arc<Saga>,
    per_call: Duration,
}

impl OrdersService {
    /// A service running `saga`, giving each upstream call `per_call` at most.
    pub fn new(saga: Arc<Saga>, per_call: Duration) -> Self {
        Self { saga, per_call }
    }
}

#[tonic::async_trait]
impl Orders for OrdersService {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<proto::Order>, Status> {
        let command = domain::validate_place_order(request.get_ref())?;
        let budget = CallBudget::from_incoming(request.metadata(), self.per_call);
        // Its own task: if the caller gives up (or its deadline drops this
        // handler), the saga still reaches a consistent stopping point.
        let saga = Arc::clone(&self.saga);
        // `in_current_span`: the saga's upstream calls stay in this RPC's trace.
        let order =
            tokio::spawn(async move { saga.place(command, budget).await }.in_current_span())
                .await
                .map_err(|error| {
                    tracing::error!(%error, "the PlaceOrder task failed");
                    Status::internal(
                        "placing the order failed unexpectedly; retry with the same request_id",
                    )
                })??;
        Ok(Response::new(to_proto(&order)))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<proto::Order>, Status> {
        let order_id = &request.get_ref().order_id;
        domain::validate_order_id("GetOrderRequest", order_id)?;
        let order = self.saga.store().get(order_id).await?;
        Ok(Response::new(to_proto(&order)))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let query = domain::validate_list(request.get_ref())?;
        // One more than a page tells whether another page follows.
        let mut orders = self
            .saga
            .store()
            .list(&query.user_id, query.after.as_ref(), query.page_size + 1)
            .await?;
        let next_page_token = if orders.len() > query.page_size as usize {
            orders.truncate(query.page_size as usize);
            orders
                .last()
                .map(|last| {
                    PageKey {
                        created_at_unix_ms: last.created_at_unix_ms,
                        order_id: last.order_id.clone(),
                    }
                    .encode()
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListOrdersResponse {
            orders: orders.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<proto::Order>, Status> {
        let order_id = request.get_ref().order_id.clone();
        domain::validate_order_id("CancelOrderRequest", &order_id)?;
        let budget = CallBudget::from_incoming(request.metadata(), self.per_call);
        // Its own task, like PlaceOrder: a caller giving up never stops a
        // refund halfway (and the recovery loop finishes what is left).
        let saga = Arc::clone(&self.saga);
        let order =
            tokio::spawn(async move { saga.cancel(&order_id, budget).await }.in_current_span())
                .await
                .map_err(|error| {
                    tracing::error!(%error, "the CancelOrder task failed");
                    Status::internal("cancelling the order failed unexpectedly; retry")
                })??;
        Ok(Response::new(to_proto(&order)))
    }
}

/// The one mapping of the service's errors to what callers see.
impl From<OrderError> for Status {
    fn from(error: OrderError) -> Self {
        let message = error.to_string();
        match &error {
            OrderError::Store(StoreError::NotFound { .. }) | OrderError::UserNotFound { .. } => {
                Status::not_found(message)
            }
            OrderError::Store(StoreError::LeaseLost { .. }) | OrderError::Busy { .. } => {
                Status::unavailable(message)
            }
            OrderError::Store(StoreError::Corrupt(_) | StoreError::Database(_)) => {
                // The cause goes to the log; callers do not see SQL.
                tracing::error!(%error, "orders storage failure");
                Status::internal("orders storage failure; see the service log")
            }
            OrderError::RequestReused { .. } => Status::invalid_argument(message),
            OrderError::Rejected { reason } if rejected_as_invalid(reason) => {
                Status::invalid_argument(message)
            }
            OrderError::Rejected { .. } | OrderError::NotCancellable { .. } => {
                Status::failed_precondition(message)
            }
            OrderError::Pending { .. } | OrderError::Upstream { .. } if error.timed_out() => {
                Status::deadline_exceeded(message)
            }
            OrderError::Pending { .. } | OrderError::Upstream { .. } => {
                Status::unavailable(message)
            }
            OrderError::Inconsistent { .. } => Status::internal(message),
        }
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        Status::from(OrderError::Store(error))
    }
}

fn to_proto(order: &Order) -> proto::Order {
    proto::Order {
        order_id: order.order_id.clone(),
        request_id: order.request_id.clone(),
        user_id: order.user_id.clone(),
        items: order
            .lines
            .iter()
            .map(|line| proto::OrderLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
            })
            .collect(),
        total_cents: order.total_cents,
        currency: order.currency.clone(),
        status: order.status.to_proto() as i32,
        payment_id: order.payment_id.clone(),
        rejection_reason: order.rejection_reason.clone(),
        created_at_unix_ms: order.created_at_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::domain::OrderStatus;

    #[test]
    fn every_error_maps_to_a_code_and_a_readable_message() {
        let cases: Vec<(OrderError, Code, &str)> = vec![
            (
                OrderError::UserNotFound { user_id: "u_9".into() },
                Code::NotFound,
                "user u_9 not found",
            ),
            (
                OrderError::Store(StoreError::NotFound { order_id: "ord_9".into() }),
                Code::NotFound,
                "order ord_9 not found",
            ),
            (
                OrderError::RequestReused { request_id: "r1".into() },
                Code::InvalidArgument,
                "request_id r1 was already used for a different order",
            ),
            (
                OrderError::Rejected { reason: "insufficient stock: apple".into() },
                Code::FailedPrecondition,
                "order rejected: insufficient stock: apple",
            ),
            (
                OrderError::Rejected { reason: "invalid order: the items are priced in EUR, not in USD: a (EUR)".into() },
                Code::InvalidArgument,
                "order rejected: invalid order: the items are priced in EUR, not in USD: a (EUR)",
            ),
            (
                OrderError::NotCancellable { order_id: "ord_1".into(), status: OrderStatus::Pending },
                Code::FailedPrecondition,
                "order ord_1 is PENDING and cannot be cancelled; only confirmed orders can",
            ),
            (
                OrderError::Pending {
                    order_id: "ord_1".into(),
                    step: "charge the payment",
                    service: "payments",
                    cause: Status::unavailable("connection refused"),
                },
                Code::Unavailable,
                "cannot charge the payment (payments: connection refused); order ord_1 is not final yet and will be finished automatically: GetOrder shows its outcome, or retry with the same request_id",
            ),
            (
                OrderError::Busy { order_id: "ord_1".into() },
                Code::Unavailable,
                "order ord_1 is being worked on by another request; GetOrder shows its outcome, or retry with the same request_id",
            ),
            (
                OrderError::Inconsistent { order_id: "ord_1".into(), detail: "x".into() },
                Code::Internal,
                "order ord_1 cannot be completed automatically: x",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{status:?}");
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn upstream_timeouts_are_deadline_exceeded() {
        for cause in [
            Status::deadline_exceeded("slow"),
            Status::cancelled("Timeout expired"),
        ] {
            let status = Status::from(OrderError::Pending {
                order_id: "ord_1".into(),
                step: "charge the payment",
                service: "payments",
                cause,
            });
            assert_eq!(status.code(), Code::DeadlineExceeded);
        }
        let status = Status::from(OrderError::Upstream {
            service: "users",
            cause: Status::unavailable("down"),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "users did not answer: down");
    }

    #[test]
    fn storage_failures_do_not_leak_sql() {
        let status = Status::from(StoreError::Database(sqlx::Error::Protocol(
            "SELECT * FROM orders".into(),
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }
}
