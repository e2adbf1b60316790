//! Makes an incoming RPC's deadline (`grpc-timeout`) visible to the handler's
//! task, so that the mesh client propagates what remains of it to every call
//! the handler makes (see `mesh::deadline`).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::server::NamedService;
use tower::{layer::layer_fn, Layer, Service};

use crate::deadline;

#[derive(Debug, Clone)]
pub(crate) struct DeadlineScope<S> {
    inner: S,
}

impl<S> DeadlineScope<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }

    /// [`DeadlineScope::new`] as a layer (item 3 of the server's stack).
    pub(crate) fn layer() -> impl Layer<S, Service = Self> + Clone {
        layer_fn(Self::new)
    }
}

impl<S: NamedService> NamedService for DeadlineScope<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for DeadlineScope<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = deadline::grpc_timeout(request.headers())
            .map(|timeout| tokio::time::Instant::now() + timeout);
        let future = self.inner.call(request);
        Box::pin(deadline::scope(deadline, future))
    }
}
