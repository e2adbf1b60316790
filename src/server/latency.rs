//! Test-only latency injection (`--inject-latency`, compiled only with the
//! `inject-latency` feature, which the test builds enable), so balancing,
//! retry and saga tests can slow one real instance down. The delay is added to the *reply*:
//! the handler runs at once and its work is done, only the answer comes late
//! (the hazardous case for retries). Health and reflection are never delayed:
//! only the application service is wrapped.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tonic::server::NamedService;
use tower::{layer::layer_fn, Layer, Service};

/// Delays each request to the wrapped service by a fixed time (or not at all).
#[derive(Debug, Clone)]
pub(crate) struct InjectLatency<S> {
    inner: S,
    delay: Option<Duration>,
}

impl<S> InjectLatency<S> {
    pub(crate) fn new(inner: S, delay: Option<Duration>) -> Self {
        Self {
            inner,
            delay: delay.filter(|delay| !delay.is_zero()),
        }
    }

    /// [`InjectLatency::new`] as a layer (item 4 of the server's stack).
    pub(crate) fn layer(delay: Option<Duration>) -> impl Layer<S, Service = Self> + Clone {
        layer_fn(move |inner| Self::new(inner, delay))
    }
}

impl<S: NamedService> NamedService for InjectLatency<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, Request> Service<Request> for InjectLatency<S>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Request: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(delay) = self.delay else {
            return Box::pin(self.inner.call(request));
        };
        // Take the service that was driven to readiness; leave a clone behind.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = ready.call(request).await;
            tokio::time::sleep(delay).await;
            response
        })
    }
}
