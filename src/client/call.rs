//! [`MeshCall`], under the call span and the routing decision: buffers the
//! request body (so that attempts can replay it), fixes the call's deadline
//! (its own `grpc-timeout`, what is left of the incoming RPC's, or the
//! default — and no later than its route's `RequestTimeout`), bounds the
//! whole call by it, and turns every failure into the `tonic::Status` the
//! caller sees, in one place.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use tonic::{body::Body, Status};
use tower::{layer::layer_fn, BoxError, Layer, Service, ServiceExt};

use super::{
    error::{into_status, BodyError, DeadlineExceeded},
    metrics::TargetMetrics,
    retry::{response_code, CallDeadline, PreviousAttempts},
    route::Routed,
};
use crate::{deadline, limits::MAX_MESSAGE_BYTES};

/// One call to `service` (see the module docs).
#[derive(Clone)]
pub(crate) struct MeshCall<S> {
    service: Arc<str>,
    inner: S,
    default_deadline: Duration,
    metrics: TargetMetrics,
}

impl<S> MeshCall<S> {
    /// Calls to `service` whose callers set no deadline get `default_deadline`.
    pub(crate) fn layer(
        service: &str,
        default_deadline: Duration,
        metrics: TargetMetrics,
    ) -> impl Layer<S, Service = Self> + Clone {
        let service: Arc<str> = service.into();
        layer_fn(move |inner| Self {
            service: service.clone(),
            inner,
            default_deadline,
            metrics: metrics.clone(),
        })
    }
}

impl<S> Service<http::Request<Body>> for MeshCall<S>
where
    S: Service<http::Request<Bytes>, Response = http::Response<Body>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Readiness is awaited per call, under the call's deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let service = self.service.clone();
        let metrics = self.metrics.clone();
        let mut deadline = deadline::for_request(request.headers(), self.default_deadline);
        if let Some(timeout) = request
            .extensions()
            .get::<Routed>()
            .and_then(|routed| routed.params.request_timeout)
        {
            deadline = deadline.min(tokio::time::Instant::now() + timeout);
        }
        metrics.request();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = Limited::new(body, MAX_MESSAGE_BYTES)
                .collect()
                .await
                .map_err(|error| into_status(Box::new(BodyError(error)), &service))?
                .to_bytes();
            let mut request = http::Request::from_parts(parts, bytes);
            request.extensions_mut().insert(CallDeadline(deadline));
            request.extensions_mut().insert(PreviousAttempts(0));
            let outcome = tokio::time::timeout_at(deadline, inner.oneshot(request)).await;
            let result = match outcome {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(error)) => Err(into_status(error, &service)),
                Err(_) => Err(into_status(
                    Box::new(DeadlineExceeded {
                        service: service.to_string(),
                        attempts: 0,
                    }),
                    &service,
                )),
            };
            match &result {
                Ok(response) if response_code(response).is_none() => {}
                _ => metrics.failed(),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use tokio::time::Instant;
    use tower_test::mock;

    fn request(timeout: &str, payload: &'static [u8]) -> http::Request<Body> {
        let mut request = http::Request::new(Body::new(Full::new(Bytes::from_static(payload))));
        request
            .headers_mut()
            .insert("grpc-timeout", timeout.parse().unwrap());
        request
    }

    #[tokio::test(start_paused = true)]
    async fn buffers_the_body_and_hands_the_deadline_to_the_attempts() {
        let (inner, mut handle) = mock::pair::<http::Request<Bytes>, http::Response<Body>>();
        let layer = MeshCall::layer("users", Duration::from_secs(10), TargetMetrics::default());
        let call = layer.layer(inner.map_err(BoxError::from));
        let start = Instant::now();
        let pending = tokio::spawn(call.oneshot(request("250m", b"payload")));
        let (sent, respond) = handle.next_request().await.unwrap();
        assert_eq!(sent.body().as_ref(), b"payload");
        let CallDeadline(deadline) = *sent.extensions().get::<CallDeadline>().unwrap();
        assert_eq!(deadline, start + Duration::from_millis(250));
        assert_eq!(sent.extensions().get::<PreviousAttempts>().unwrap().0, 0);
        respond.send_response(http::Response::new(Body::empty()));
        assert!(pending.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_outlives_its_deadline_is_deadline_exceeded() {
        let (inner, mut handle) = mock::pair::<http::Request<Bytes>, http::Response<Body>>();
        let metrics = TargetMetrics::default();
        let layer = MeshCall::layer("payments", Duration::from_secs(10), metrics.clone());
        let call = layer.layer(inner.map_err(BoxError::from));
        let pending = tokio::spawn(call.oneshot(request("40m", b"")));
        let (_sent, _never_answered) = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_millis(41)).await;
        let status = pending.await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("payments"), "{status:?}");
        assert_eq!(metrics.snapshot().failures, 1);
    }
}
