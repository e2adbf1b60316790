//! The one place where the server's answers get the status codes the gRPC
//! spec gives them where tonic's defaults differ:
//!
//! - a message over the size limit ([`crate::limits::MAX_MESSAGE_BYTES`]) is
//!   RESOURCE_EXHAUSTED. tonic's codec says OUT_OF_RANGE: in the response
//!   headers when the request was too big, in the trailers when the response
//!   was; both are rewritten here.
//! - a request whose deadline (`grpc-timeout`) passes while it is served is
//!   DEADLINE_EXCEEDED, and the handler is dropped. (tonic's own transport
//!   answers CANCELLED "Timeout expired"; the mesh port is served by hyper
//!   over tonic's routes, see [`super::tls`], so this layer is the only timer.)
//! - no status is larger than every mesh client accepts
//!   ([`crate::limits::MAX_RESPONSE_HEADER_LIST_BYTES`]): a message over
//!   [`MAX_STATUS_MESSAGE_BYTES`] is cut, details over
//!   [`MAX_STATUS_DETAILS_BYTES`] are dropped (the message still says what
//!   is wrong). Statuses built from input are bounded where they are made
//!   ([`crate::bounded`]); this is the net for any other.
//!
//! It wraps the application service inside the observability layer, so
//! metrics and spans record the codes the caller receives.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tonic::{body::Body, server::NamedService, Code, Status};
use tower::{layer::layer_fn, Layer, Service};

use crate::{
    bounded, deadline,
    limits::{MAX_STATUS_DETAILS_BYTES, MAX_STATUS_MESSAGE_BYTES},
    telemetry::grpc_status,
};

/// Gives the wrapped service's answers their spec status codes (see the
/// module docs).
#[derive(Debug, Clone)]
pub(crate) struct SpecStatusCodes<S> {
    inner: S,
}

impl<S> SpecStatusCodes<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }

    /// [`SpecStatusCodes::new`] as a layer (item 2 of the server's stack).
    pub(crate) fn layer() -> impl Layer<S, Service = Self> + Clone {
        layer_fn(Self::new)
    }
}

impl<S: NamedService> NamedService for SpecStatusCodes<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for SpecStatusCodes<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let timeout = deadline::grpc_timeout(request.headers());
        let received = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = match timeout {
                None => answer.await?,
                Some(timeout) => match tokio::time::timeout_at(received + timeout, answer).await {
                    Ok(response) => response?,
                    Err(_elapsed) => return Ok(deadline_exceeded(timeout)),
                },
            };
            Ok(with_spec_statuses(response))
        })
    }
}

/// The answer to a request whose deadline passed on the server.
fn deadline_exceeded(timeout: Duration) -> http::Response<Body> {
    Status::deadline_exceeded(format!(
        "the request's deadline ({timeout:?} after it arrived) passed before the server answered"
    ))
    .into_http()
}

/// `response` with tonic's size-limit OUT_OF_RANGE turned into
/// RESOURCE_EXHAUSTED and its status bounded, in its headers and in its
/// trailers.
fn with_spec_statuses(response: http::Response<Body>) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    remap_size_limit(&mut parts.headers);
    bound_status(&mut parts.headers);
    if grpc_status(&parts.headers).is_some() {
        // Trailers-only: the status is in the headers and the body is empty.
        return http::Response::from_parts(parts, body);
    }
    let body = body.map_frame(|mut frame| {
        if let Some(trailers) = frame.trailers_mut() {
            remap_size_limit(trailers);
            bound_status(trailers);
        }
        frame
    });
    http::Response::from_parts(parts, Body::new(body))
}

/// Cuts the status in `headers` to what every mesh client accepts: the
/// message to [`MAX_STATUS_MESSAGE_BYTES`] (percent-encoded, it is at most
/// three times that), details over [`MAX_STATUS_DETAILS_BYTES`] dropped.
fn bound_status(headers: &mut http::HeaderMap) {
    let encoded_len = |name: &str| headers.get(name).map_or(0, |value| value.len());
    let message_too_long = encoded_len("grpc-message") > MAX_STATUS_MESSAGE_BYTES;
    let details_too_long =
        encoded_len("grpc-status-details-bin") > MAX_STATUS_DETAILS_BYTES.div_ceil(3) * 4;
    if !message_too_long && !details_too_long {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let message = bounded::message(status.message());
    if message.len() == status.message().len() && !details_too_long {
        // Long only because of its encoding: within the bound.
        return;
    }
    tracing::warn!(
        code = ?status.code(),
        message_bytes = status.message().len(),
        details_bytes = status.details().len(),
        "a status over the mesh's bounds was cut (message) or its details dropped"
    );
    let details = if status.details().len() > MAX_STATUS_DETAILS_BYTES {
        bytes::Bytes::new()
    } else {
        bytes::Bytes::copy_from_slice(status.details())
    };
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    let bounded = Status::with_details(status.code(), message, details);
    // Writing a status into a header map only fails for a message that is not
    // a valid header value, which percent-encoding rules out.
    let _ = bounded.add_header(headers);
}

/// Rewrites `grpc-status` in `headers` (response headers or trailers) to
/// RESOURCE_EXHAUSTED when it is tonic's OUT_OF_RANGE for a message over the
/// size limit. Any other OUT_OF_RANGE (an application's) is left alone.
fn remap_size_limit(headers: &mut http::HeaderMap) {
    if grpc_status(headers) != Some(Code::OutOfRange) {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if is_size_limit(status.message()) {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
}

/// Whether `message` is tonic's codec refusing a message over the size
/// limit ("Error, decoded message length too large: found … bytes, the limit
/// is: … bytes", or "encoded" for a response).
fn is_size_limit(message: &str) -> bool {
    message.contains("message length too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailers_only(status: Status) -> http::Response<Body> {
        status.into_http()
    }

    fn with_trailers(status: Status) -> http::Response<Body> {
        let mut trailers = http::HeaderMap::new();
        status.add_header(&mut trailers).unwrap();
        let body = http_body_util::StreamBody::new(futures::stream::iter([Ok::<_, Status>(
            http_body::Frame::trailers(trailers),
        )]));
        http::Response::new(Body::new(body))
    }

    async fn trailer_code(response: http::Response<Body>) -> Option<Code> {
        let trailers = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .trailers()?
            .clone();
        grpc_status(&trailers)
    }

    fn too_large(direction: &str) -> Status {
        Status::out_of_range(format!(
            "Error, {direction} message length too large: found 5000000 bytes, the limit is: 4194304 bytes"
        ))
    }

    #[tokio::test]
    async fn the_size_limit_is_resource_exhausted_in_headers_and_trailers() {
        let response = with_spec_statuses(trailers_only(too_large("decoded")));
        assert_eq!(
            grpc_status(response.headers()),
            Some(Code::ResourceExhausted)
        );
        let message = Status::from_header_map(response.headers()).unwrap();
        assert!(
            message.message().contains("found 5000000 bytes"),
            "{message:?}"
        );

        let response = with_spec_statuses(with_trailers(too_large("encoded")));
        assert_eq!(trailer_code(response).await, Some(Code::ResourceExhausted));
    }

    #[tokio::test]
    async fn other_statuses_pass_unchanged() {
        let page = Status::out_of_range("page 9 is past the last page");
        let response = with_spec_statuses(trailers_only(page));
        assert_eq!(grpc_status(response.headers()), Some(Code::OutOfRange));

        let response = with_spec_statuses(with_trailers(Status::not_found("no user 7")));
        assert_eq!(trailer_code(response).await, Some(Code::NotFound));
    }

    /// Hardening finding 1 (the net): whatever a handler answers, no status
    /// leaves a mesh server larger than every mesh client accepts.
    #[tokio::test]
    async fn a_status_over_the_bounds_is_cut_in_headers_and_trailers() {
        let huge = || {
            Status::with_details(
                Code::FailedPrecondition,
                "é".repeat(50_000),
                bytes::Bytes::from(vec![1; 50_000]),
            )
        };
        let check = |status: Status| {
            assert_eq!(status.code(), Code::FailedPrecondition);
            assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES);
            assert!(status.message().starts_with("éé"));
            assert!(status.message().ends_with('…'));
            assert!(status.details().is_empty());
        };
        let response = with_spec_statuses(trailers_only(huge()));
        check(Status::from_header_map(response.headers()).unwrap());

        let response = with_spec_statuses(with_trailers(huge()));
        let trailers = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .trailers()
            .unwrap()
            .clone();
        check(Status::from_header_map(&trailers).unwrap());

        // Within the bounds (even if percent-encoding makes it longer): untouched.
        let within = Status::with_details(
            Code::InvalidArgument,
            "é".repeat(MAX_STATUS_MESSAGE_BYTES / 2),
            bytes::Bytes::from(vec![7; MAX_STATUS_DETAILS_BYTES]),
        );
        let response = with_spec_statuses(trailers_only(within.clone()));
        let passed = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(passed.message(), within.message());
        assert_eq!(passed.details(), within.details());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_that_passes_is_deadline_exceeded() {
        let slow = tower::service_fn(|_: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        });
        let mut service = SpecStatusCodes::new(slow);
        let request = http::Request::builder()
            .header("grpc-timeout", "100m")
            .body(())
            .unwrap();
        let started = Instant::now();
        let response = service.call(request).await.unwrap();
        assert_eq!(
            grpc_status(response.headers()),
            Some(Code::DeadlineExceeded)
        );
        assert!(started.elapsed() <= Duration::from_millis(100));

        let untimed = http::Request::new(());
        let response = service.call(untimed).await.unwrap();
        assert_eq!(grpc_status(response.headers()), None);
    }
}
