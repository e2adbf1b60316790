//! The client's errors, and the one place where every failure becomes the
//! `tonic::Status` a caller sees.

use std::{error::Error as StdError, io};

use discovery::error_chain;
use tonic::{Code, Status};
use tower::BoxError;

/// No endpoint of the target became ready within the fail-fast period.
#[derive(Debug, thiserror::Error)]
#[error("no healthy instance of {service} (none passing in Consul, or all ejected after failures)")]
pub struct NoHealthyEndpoint {
    /// The target service.
    pub service: String,
}

/// One attempt ran past its per-try timeout.
#[derive(Debug, thiserror::Error)]
#[error("attempt timed out after {0:?}")]
pub struct PerTryTimeout(pub std::time::Duration);

/// The call's overall deadline passed (all attempts included).
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded calling {service} after {attempts} attempt(s)")]
pub struct DeadlineExceeded {
    /// The target service.
    pub service: String,
    /// Attempts started.
    pub attempts: u32,
}

/// The connection to an endpoint could not be established (TCP connect, TLS
/// handshake, or the server's Connect identity was not the target's): the
/// request was never sent.
#[derive(Debug, thiserror::Error)]
#[error("no connection to {target} at {address}, nothing was sent: {reason}")]
pub struct NotConnected {
    /// `host:port` dialled.
    pub address: String,
    /// The target service.
    pub target: String,
    /// What failed.
    pub reason: String,
    /// The I/O error, when there is one.
    #[source]
    pub source: Option<io::Error>,
}

impl NotConnected {
    /// Why dialling `target` at `address` failed (`source`: the I/O error, if any).
    pub(crate) fn new(
        address: &str,
        target: &str,
        reason: String,
        source: Option<io::Error>,
    ) -> Self {
        Self {
            address: address.to_owned(),
            target: target.to_owned(),
            reason,
            source,
        }
    }
}

/// Consul answers a chain target's health query with no instance because
/// the token may not read the service: the call is refused rather than
/// failed over (a failover would hide a missing ACL rule).
#[derive(Debug, thiserror::Error)]
#[error("Consul refused the instances of {target}: {reason}")]
pub struct TargetRefused {
    /// The target (`legacy`, `inventory (subset v2)`).
    pub target: String,
    /// Consul's refusal and what the token needs.
    pub reason: String,
}

/// The routing chain sends the call where the client cannot go (a target in
/// another datacenter).
#[derive(Debug, thiserror::Error)]
#[error("calls to {service} routed to {resolver} cannot be sent: {reason}")]
pub struct Unroutable {
    /// The service called.
    pub service: String,
    /// The resolver node the call was routed to.
    pub resolver: String,
    /// Why.
    pub reason: String,
}

/// The request body could not be buffered for replay.
#[derive(Debug, thiserror::Error)]
#[error("cannot buffer the request: {0}")]
pub(crate) struct BodyError(pub(crate) BoxError);

/// Whether the request provably never reached a server: the connection was
/// refused, no endpoint was ready, or the server refused the stream before
/// processing it (HTTP/2 REFUSED_STREAM). Such a request is safe to retry
/// whatever the method.
pub(crate) fn never_reached_server(error: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if error.is::<NoHealthyEndpoint>() || error.is::<NotConnected>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if matches!(io.kind(), io::ErrorKind::ConnectionRefused) {
                return true;
            }
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return true;
            }
        }
        // hyper-util's connector reports a refused connect as a ConnectError
        // whose message is the only stable marker across versions.
        let text = error.to_string();
        if text.contains("Connection refused") || text.contains("tcp connect error") {
            return true;
        }
        current = error.source();
    }
    false
}

/// Whether the server answered but our HTTP/2 layer refused the answer and
/// reset the stream (e.g. response headers over the header-list limit): an
/// answer of a working server, not a transport failure. The same request
/// would get the same answer, so it is neither retried nor counted toward
/// ejecting the endpoint.
pub(crate) fn answer_refused_locally(error: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_reset() && h2.is_library();
        }
        current = error.source();
    }
    false
}

/// Whether the routing refused the attempt before it was sent anywhere
/// (a refused target, an unroutable destination): retrying cannot help.
pub(crate) fn is_routing_refusal(error: &(dyn StdError + 'static)) -> bool {
    error.is::<TargetRefused>() || error.is::<Unroutable>()
}

/// Whether an attempt ran out of time: our per-try timer, or tonic's own
/// enforcement of the `grpc-timeout` header we set.
pub(crate) fn is_timeout(error: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if error.is::<PerTryTimeout>() || error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// Turns any error of the stack into the `Status` the caller sees (tonic
/// keeps a boxed `Status` as it is).
pub(crate) fn into_status(error: BoxError, service: &str) -> Status {
    if let Some(status) = error.downcast_ref::<Status>() {
        return status.clone();
    }
    let mut status = if error.is::<NoHealthyEndpoint>() {
        Status::unavailable(error.to_string())
    } else if error.is::<DeadlineExceeded>() {
        Status::deadline_exceeded(error.to_string())
    } else if is_timeout(&*error) {
        Status::deadline_exceeded(format!("calling {service}: {}", error_chain(&*error)))
    } else if error.is::<BodyError>() {
        Status::new(Code::Internal, error.to_string())
    } else if answer_refused_locally(&*error) {
        Status::internal(format!(
            "calling {service}: the server's answer could not be read: {}",
            error_chain(&*error)
        ))
    } else if error.is::<TargetRefused>() {
        Status::permission_denied(error.to_string())
    } else if error.is::<Unroutable>() {
        Status::unavailable(error.to_string())
    } else {
        Status::unavailable(format!("calling {service}: {}", error_chain(&*error)))
    };
    // Keep the cause, so callers can tell "never sent" from "outcome unknown".
    status.set_source(std::sync::Arc::from(error));
    status
}

/// Whether a failed call's `status` proves that the request never reached a
/// server (connection refused, no healthy endpoint, REFUSED_STREAM), so its
/// effects certainly did not happen. A non-idempotent call is only retried
/// in that case, so this holds for every attempt the mesh client made.
pub fn never_reached_server_status(status: &Status) -> bool {
    std::error::Error::source(status).is_some_and(never_reached_server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_refused_anywhere_in_the_chain_never_reached_a_server() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Wrapper(#[source] io::Error);
        let refused = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(never_reached_server(&refused));
        let reset = Wrapper(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(!never_reached_server(&reset));
        let none = NoHealthyEndpoint {
            service: "payments".into(),
        };
        assert!(never_reached_server(&none));
        #[derive(Debug, thiserror::Error)]
        #[error("connect error")]
        struct ConnectWrapper(#[source] NotConnected);
        let handshake = ConnectWrapper(NotConnected {
            address: "127.0.0.1:1".into(),
            target: "payments".into(),
            reason: "the server is spiffe://td/ns/default/dc/dc1/svc/inventory".into(),
            source: None,
        });
        assert!(never_reached_server(&handshake));
    }

    #[test]
    fn maps_errors_to_the_codes_callers_expect() {
        let none: BoxError = Box::new(NoHealthyEndpoint {
            service: "payments".into(),
        });
        let status = into_status(none, "payments");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("no healthy instance of payments"));
        let kept: BoxError = Box::new(Status::failed_precondition("short"));
        assert_eq!(into_status(kept, "x").code(), Code::FailedPrecondition);
        let late: BoxError = Box::new(DeadlineExceeded {
            service: "x".into(),
            attempts: 2,
        });
        assert_eq!(into_status(late, "x").code(), Code::DeadlineExceeded);
    }
}
