//! Why an order operation did not return an order. Mapped to gRPC statuses
//! in one place (`impl From<OrderError> for Status` in [`crate::grpc`]).

use tonic::{Code, Status};

use crate::{
    domain::{OrderStatus, ParkReason},
    store::StoreError,
};

/// Why an order operation did not return an order.
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
    /// Another run is working on this order right now.
    #[error("order {order_id} is being worked on by another request; GetOrder shows its outcome, or retry with the same request_id")]
    Busy {
        /// The order.
        order_id: String,
    },
    /// An upstream call failed; the order is not final yet and the recovery
    /// loop finishes it once the upstream answers again.
    #[error("cannot {step} ({service}: {}); order {order_id} is not final yet and will be finished automatically: GetOrder shows its outcome, or retry with the same request_id", cause.message())]
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
    /// CancelOrder on an order that is neither confirmed nor cancelled.
    #[error("order {order_id} is {} and cannot be cancelled; only confirmed orders can", status.as_str())]
    NotCancellable {
        /// The order.
        order_id: String,
        /// Its status.
        status: OrderStatus,
    },
    /// The upstream state contradicts the saga's invariants; an operator
    /// must look (the run parks the order).
    #[error(
        "order {order_id} cannot be completed automatically: {detail}; it waits for an operator"
    )]
    Inconsistent {
        /// The order.
        order_id: String,
        /// The kind.
        reason: ParkReason,
        /// What is wrong (bounded).
        detail: String,
    },
    /// ResolveParkedOrder asked for an outcome the order cannot have.
    #[error("a parked {} order cannot be resolved as {}: a PENDING order becomes CONFIRMED or REJECTED, a CANCELLING one CANCELLED or CONFIRMED", from.as_str(), to.as_str())]
    CannotResolve {
        /// The order.
        order_id: String,
        /// Its status.
        from: OrderStatus,
        /// The status asked for.
        to: OrderStatus,
    },
    /// The order is parked: it waits for an operator (RetryParkedOrder or
    /// ResolveParkedOrder); nothing was run.
    #[error("order {order_id} waits for an operator ({}): {detail}", reason.as_str())]
    Parked {
        /// The order.
        order_id: String,
        /// The kind.
        reason: ParkReason,
        /// What the saga found.
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

    /// Whether trying the same step again soon may succeed (an upstream
    /// that failed transiently).
    pub fn is_transient(&self) -> bool {
        matches!(self, OrderError::Pending { .. })
    }
}
