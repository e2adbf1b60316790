//! One attempt of a call: rebuilds a replayable request body from the
//! buffered bytes, tells the server how long it has (`grpc-timeout`: the
//! per-try timeout or what is left of the call's deadline, whichever is
//! shorter), numbers retries (`grpc-previous-rpc-attempts`), and abandons an
//! attempt that runs past its time.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{layer::layer_fn, BoxError, Layer, Service};

use super::{
    error::PerTryTimeout,
    retry::{CallDeadline, PreviousAttempts},
};
use crate::deadline::format_grpc_timeout;

#[derive(Clone)]
pub(crate) struct Attempt<S> {
    inner: S,
    per_try_timeout: Duration,
}

impl<S> Attempt<S> {
    /// Attempts of at most `per_try_timeout` each (less when the call's
    /// deadline is nearer).
    pub(crate) fn layer(per_try_timeout: Duration) -> impl Layer<S, Service = Self> + Clone {
        layer_fn(move |inner| Self::new(inner, per_try_timeout))
    }

    pub(crate) fn new(inner: S, per_try_timeout: Duration) -> Self {
        Self {
            inner,
            per_try_timeout,
        }
    }
}

impl<S> Service<http::Request<Bytes>> for Attempt<S>
where
    S: Service<http::Request<Bytes>, Response = http::Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let (mut parts, bytes) = request.into_parts();
        let remaining = parts
            .extensions
            .get::<CallDeadline>()
            .map(|CallDeadline(deadline)| deadline.saturating_duration_since(Instant::now()))
            .unwrap_or(self.per_try_timeout);
        let timeout = self.per_try_timeout.min(remaining);
        if let Ok(value) = format_grpc_timeout(timeout).parse() {
            parts.headers.insert("grpc-timeout", value);
        }
        if let Some(PreviousAttempts(previous)) =
            parts.extensions.get::<PreviousAttempts>().copied()
        {
            parts
                .headers
                .insert("grpc-previous-rpc-attempts", previous.into());
        }
        // The bytes go down as they are (a cheap clone of the call's buffer):
        // the endpoint sends them as one DATA frame.
        let future = self.inner.call(http::Request::from_parts(parts, bytes));
        Box::pin(async move {
            match tokio::time::timeout(timeout, future).await {
                Ok(result) => result,
                Err(_) => Err(PerTryTimeout(timeout).into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;
    use tower_test::mock;

    #[tokio::test(start_paused = true)]
    async fn sets_headers_and_times_out_one_attempt() {
        let (service, mut handle) = mock::pair::<http::Request<Bytes>, http::Response<Body>>();
        let service = service.map_err(BoxError::from);
        let attempt = Attempt::new(service, Duration::from_millis(200));
        let mut request = http::Request::new(Bytes::from_static(b"payload"));
        request
            .extensions_mut()
            .insert(CallDeadline(Instant::now() + Duration::from_secs(10)));
        request.extensions_mut().insert(PreviousAttempts(2));
        let call = tokio::spawn(attempt.oneshot(request));
        let (sent, _respond) = handle.next_request().await.unwrap();
        assert_eq!(sent.headers()["grpc-timeout"], "200m");
        assert_eq!(sent.headers()["grpc-previous-rpc-attempts"], "2");
        tokio::time::advance(Duration::from_millis(250)).await;
        let error = call.await.unwrap().unwrap_err();
        assert!(error.is::<PerTryTimeout>(), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_near_deadline_shortens_the_attempt() {
        let (service, mut handle) = mock::pair::<http::Request<Bytes>, http::Response<Body>>();
        let attempt = Attempt::new(service.map_err(BoxError::from), Duration::from_secs(3));
        let mut request = http::Request::new(Bytes::new());
        request
            .extensions_mut()
            .insert(CallDeadline(Instant::now() + Duration::from_millis(40)));
        let _call = tokio::spawn(attempt.oneshot(request));
        let (sent, _respond) = handle.next_request().await.unwrap();
        assert_eq!(sent.headers()["grpc-timeout"], "40m");
    }
}
