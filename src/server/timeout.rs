//! Enforces an incoming `grpc-timeout` on the server side, as tonic's own
//! server does: a handler still running when the caller's deadline passes is
//! dropped and the stream answered CANCELLED ("Timeout expired").

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use futures::future::{BoxFuture, FutureExt};
use tonic::{body::Body, Status};
use tower::Service;

use crate::client::deadline::parse_grpc_timeout;

#[derive(Debug, Clone)]
pub(crate) struct GrpcTimeout<S> {
    inner: S,
}

impl<S> GrpcTimeout<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<http::Request<B>> for GrpcTimeout<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        let future = self.inner.call(request);
        match timeout {
            None => future.boxed(),
            Some(timeout) => async move {
                match tokio::time::timeout(timeout, future).await {
                    Ok(result) => result,
                    Err(_) => Ok(Status::cancelled("Timeout expired").into_http()),
                }
            }
            .boxed(),
        }
    }
}
