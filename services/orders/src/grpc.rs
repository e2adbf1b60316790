//! The tonic service: validates requests, runs the saga or the store, and
//! maps every error to a gRPC status in one place
//! ([`impl From<OrderError> for Status`](OrderError)).

use std::{sync::Arc, time::Duration};
use tracing::Instrument;

use mesh::caller::Caller;
use mesh::{
    connect::PeerIdentity,
    proto::orders::v1::{
        self as proto, orders_server::Orders, CancelOrderRequest, GetOrderRequest,
        ListOrdersRequest, ListOrdersResponse, ListParkedOrdersRequest, ListParkedOrdersResponse,
        ParkedOrder, PlaceOrderRequest, ResolveParkedOrderRequest, RetryParkedOrderRequest,
    },
};
use tonic::{Request, Response, Status};

use mesh::deadline::CallBudget;

use crate::{
    domain::{self, PageKey},
    saga::{rejected_as_invalid, OrderError, Saga},
    store::{Order, StoreError},
};

/// The Connect identity allowed to call the operator RPCs.
pub const OPERATOR: &str = "operator";

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
        Caller::of(&request).may_act_for(&command.user_id, "placing an order for this user")?;
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
        Caller::of(&request).may_act_for(&order.user_id, &format!("order {order_id}"))?;
        Ok(Response::new(to_proto(&order)))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let query = domain::validate_list(request.get_ref())?;
        Caller::of(&request).may_act_for(&query.user_id, "this user's order list")?;
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
        let caller = Caller::of(&request);
        if caller != Caller::Service {
            // An end user cancels only its own orders: checked before anything changes.
            let order = self.saga.store().get(&order_id).await?;
            caller.may_act_for(&order.user_id, &format!("order {order_id}"))?;
        }
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

    async fn list_parked_orders(
        &self,
        request: Request<ListParkedOrdersRequest>,
    ) -> Result<Response<ListParkedOrdersResponse>, Status> {
        require_operator(&request, "ListParkedOrders")?;
        let query = domain::validate_list_parked(request.get_ref())?;
        let mut orders = self
            .saga
            .parked(query.after.as_ref(), query.page_size + 1)
            .await?;
        let next_page_token = if orders.len() > query.page_size as usize {
            orders.truncate(query.page_size as usize);
            orders
                .last()
                .and_then(|last| {
                    last.parked.as_ref().map(|parked| {
                        PageKey {
                            created_at_unix_ms: parked.at_unix_ms,
                            order_id: last.order_id.clone(),
                        }
                        .encode()
                    })
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListParkedOrdersResponse {
            orders: orders
                .iter()
                .map(|order| ParkedOrder {
                    order: Some(to_proto(order)),
                    step: order.step.as_str().to_owned(),
                    reason: order
                        .parked
                        .as_ref()
                        .map(|parked| parked.reason.as_str().to_owned())
                        .unwrap_or_default(),
                    detail: order
                        .parked
                        .as_ref()
                        .map(|parked| parked.detail.clone())
                        .unwrap_or_default(),
                    parked_at_unix_ms: order.parked.as_ref().map_or(0, |parked| parked.at_unix_ms),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn retry_parked_order(
        &self,
        request: Request<RetryParkedOrderRequest>,
    ) -> Result<Response<proto::Order>, Status> {
        let operator = require_operator(&request, "RetryParkedOrder")?;
        let order_id = request.get_ref().order_id.trim().to_owned();
        domain::validate_order_id("RetryParkedOrderRequest", &order_id)?;
        tracing::info!(%order_id, %operator, "RetryParkedOrder");
        let budget = CallBudget::from_incoming(request.metadata(), self.per_call);
        let saga = Arc::clone(&self.saga);
        let order = tokio::spawn(
            async move { saga.retry_parked(&order_id, budget).await }.in_current_span(),
        )
        .await
        .map_err(|error| {
            tracing::error!(%error, "the RetryParkedOrder task failed");
            Status::internal("retrying the order failed unexpectedly; retry")
        })??;
        Ok(Response::new(to_proto(&order)))
    }

    async fn resolve_parked_order(
        &self,
        request: Request<ResolveParkedOrderRequest>,
    ) -> Result<Response<proto::Order>, Status> {
        let operator = require_operator(&request, "ResolveParkedOrder")?;
        let resolution = domain::validate_resolve(request.get_ref())?;
        tracing::info!(order_id = %resolution.order_id, %operator, "ResolveParkedOrder");
        let order = self
            .saga
            .resolve_parked(&resolution.order_id, resolution.status, &resolution.note)
            .await?;
        Ok(Response::new(to_proto(&order)))
    }
}

/// The caller's Connect identity if it is [`OPERATOR`] (checked from the
/// `PeerIdentity` the mTLS server put in the request's extensions); anyone
/// else — another service, or any caller of a server run with `--mtls=off`
/// — gets PERMISSION_DENIED.
fn require_operator<T>(request: &Request<T>, rpc: &str) -> Result<String, Status> {
    match request.extensions().get::<PeerIdentity>() {
        Some(peer) if peer.identity.service == OPERATOR => Ok(peer.identity.to_string()),
        Some(peer) => Err(Status::permission_denied(format!(
            "{rpc} is for the {OPERATOR} identity only; the caller is {}",
            peer.identity.service
        ))),
        None => Err(Status::permission_denied(format!(
            "{rpc} is for the {OPERATOR} identity only, over Connect mTLS; this server runs without mTLS, so nobody may call it"
        ))),
    }
}

/// The one mapping of the service's errors to what callers see.
impl From<OrderError> for Status {
    fn from(error: OrderError) -> Self {
        // Messages quote requests and upstream answers: bounded.
        let message = mesh::bounded::message(&error.to_string());
        match &error {
            OrderError::Store(StoreError::NotFound { .. }) | OrderError::UserNotFound { .. } => {
                Status::not_found(message)
            }
            OrderError::Store(StoreError::LeaseLost { .. }) | OrderError::Busy { .. } => {
                Status::unavailable(message)
            }
            OrderError::Store(StoreError::Write(write)) if write.is_transient() => {
                tracing::warn!(%error, "orders write not committed");
                Status::unavailable("the orders database is busy; try again")
            }
            OrderError::Store(StoreError::Read(read)) if read.is_transient() => {
                tracing::warn!(%error, "orders read not run");
                Status::unavailable("the orders database is busy; try again")
            }
            OrderError::Store(StoreError::Sqlite(sqlite))
                if mesh::storage::is_sqlite_busy(sqlite) =>
            {
                tracing::warn!(%error, "orders database busy");
                Status::unavailable("the orders database is busy; try again")
            }
            OrderError::Store(
                StoreError::Corrupt(_)
                | StoreError::Database(_)
                | StoreError::Sqlite(_)
                | StoreError::Write(_)
                | StoreError::Read(_),
            ) => {
                // The cause goes to the log; callers do not see SQL.
                tracing::error!(%error, "orders storage failure");
                Status::internal("orders storage failure; see the service log")
            }
            OrderError::RequestReused { .. } => Status::invalid_argument(message),
            OrderError::Rejected { reason } if rejected_as_invalid(reason) => {
                Status::invalid_argument(message)
            }
            OrderError::Rejected { .. }
            | OrderError::NotCancellable { .. }
            | OrderError::CannotResolve { .. }
            | OrderError::Store(StoreError::NotParked { .. }) => {
                Status::failed_precondition(message)
            }
            OrderError::Pending { .. } | OrderError::Upstream { .. } if error.timed_out() => {
                Status::deadline_exceeded(message)
            }
            OrderError::Pending { .. } | OrderError::Upstream { .. } => {
                Status::unavailable(message)
            }
            OrderError::Inconsistent { .. } | OrderError::Parked { .. } => {
                Status::internal(message)
            }
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
                OrderError::Inconsistent {
                    order_id: "ord_1".into(),
                    reason: crate::domain::ParkReason::InventoryRefused,
                    detail: "x".into(),
                },
                Code::Internal,
                "order ord_1 cannot be completed automatically: x; it waits for an operator",
            ),
            (
                OrderError::Parked {
                    order_id: "ord_1".into(),
                    reason: crate::domain::ParkReason::PaymentState,
                    detail: "payment p is DECLINED".into(),
                },
                Code::Internal,
                "order ord_1 waits for an operator (payment_state): payment p is DECLINED",
            ),
            (
                OrderError::Store(StoreError::NotParked { order_id: "ord_1".into() }),
                Code::FailedPrecondition,
                "order ord_1 is not parked (only a parked order can be retried or resolved by hand)",
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
    fn messages_quoting_upstream_answers_are_bounded() {
        let status = Status::from(OrderError::Pending {
            order_id: "ord_1".into(),
            step: "reserve stock",
            service: "inventory",
            cause: Status::internal("é".repeat(100_000)),
        });
        assert!(status.message().len() <= mesh::limits::MAX_STATUS_MESSAGE_BYTES);
        assert!(status
            .message()
            .starts_with("cannot reserve stock (inventory: éé"));
    }

    fn peer(service: &str) -> PeerIdentity {
        PeerIdentity {
            identity: mesh::connect::SpiffeId {
                trust_domain: "11111111-2222-3333-4444-555555555555.consul".into(),
                namespace: "default".into(),
                datacenter: "dc1".into(),
                service: service.into(),
            },
            serial: "01".into(),
        }
    }

    #[test]
    fn only_the_operator_identity_may_call_operator_rpcs() {
        let mut request = Request::new(());
        request.extensions_mut().insert(peer("operator"));
        assert!(require_operator(&request, "RetryParkedOrder").is_ok());

        let mut request = Request::new(());
        request.extensions_mut().insert(peer("users"));
        let status = require_operator(&request, "RetryParkedOrder").unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "RetryParkedOrder is for the operator identity only; the caller is users"
        );

        let status = require_operator(&Request::new(()), "ListParkedOrders").unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(status.message().contains("without mTLS"), "{status:?}");
    }

    #[test]
    fn a_write_that_may_succeed_later_is_unavailable() {
        let busy = OrderError::Store(StoreError::Write(mesh::storage::WriteError::QueueFull {
            database: "orders".into(),
            capacity: 1024,
        }));
        let status = Status::from(busy);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "the orders database is busy; try again");
        let panicked = OrderError::Store(StoreError::Write(mesh::storage::WriteError::Panicked {
            database: "orders".into(),
        }));
        assert_eq!(Status::from(panicked).code(), Code::Internal);
    }

    #[test]
    fn a_read_that_may_succeed_later_is_unavailable() {
        let busy = OrderError::Store(StoreError::Read(mesh::storage::ReadError::Busy {
            database: "orders".into(),
            capacity: 1024,
        }));
        let status = Status::from(busy);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "the orders database is busy; try again");
        let panicked = OrderError::Store(StoreError::Read(mesh::storage::ReadError::Panicked {
            database: "orders".into(),
        }));
        assert_eq!(Status::from(panicked).code(), Code::Internal);
        let locked = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(5), None);
        let status = Status::from(OrderError::Store(StoreError::Sqlite(locked)));
        assert_eq!(status.code(), Code::Unavailable);
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
