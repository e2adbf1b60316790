//! [`Route`], right under the call span: consults the routing table in force
//! once per call (route, then splitter) and carries the decision in the
//! request's extensions ([`Routed`]): the route's `RequestTimeout` to
//! `MeshCall`, its retry settings to the retry policy, the chosen resolver to
//! each attempt's `Dispatch`. Before Consul's first chain arrives, a call
//! waits for it (at most `fail_fast_after`).

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::{BoxFuture, Either};
use tonic::{body::Body, Status};
use tower::{layer::layer_fn, Layer, Service, ServiceExt};

use super::{
    live::{LiveTable, Readiness, ServiceRouting},
    routing::RouteParams,
};

/// A call's routing decision, in its request extensions.
#[derive(Clone)]
pub(crate) struct Routed {
    /// The table it was decided on (kept alive for the whole call, retries included).
    pub(crate) live: Arc<LiveTable>,
    /// The resolver chosen.
    pub(crate) resolver: usize,
    /// The route's settings.
    pub(crate) params: Arc<RouteParams>,
}

/// The routing layer (see the module docs).
#[derive(Clone)]
pub(crate) struct Route<S> {
    inner: S,
    routing: Arc<ServiceRouting>,
    wait_for_table: Duration,
}

impl<S> Route<S> {
    /// Routes calls by `routing`'s table; waits at most `wait_for_table` for the first one.
    pub(crate) fn layer(
        routing: Arc<ServiceRouting>,
        wait_for_table: Duration,
    ) -> impl Layer<S, Service = Self> + Clone {
        layer_fn(move |inner| Self {
            inner,
            routing: routing.clone(),
            wait_for_table,
        })
    }
}

/// Decides `request`'s route on `live` and records it in its extensions.
fn route(live: Arc<LiveTable>, request: &mut http::Request<Body>) -> Result<(), Status> {
    let decision = live
        .table
        .decide(request.uri().path(), request.headers())
        .ok_or_else(|| {
            Status::unimplemented(format!(
                "no route of {}'s service-router takes {}",
                live.table.service(),
                request.uri().path()
            ))
        })?;
    request.extensions_mut().insert(Routed {
        live,
        resolver: decision.resolver,
        params: decision.params,
    });
    Ok(())
}

impl<S> Service<http::Request<Body>> for Route<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Status>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Status;
    type Future = Either<S::Future, BoxFuture<'static, Result<http::Response<Body>, Status>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(live) = self.routing.live() {
            return match route(live, &mut request) {
                Ok(()) => Either::Left(self.inner.call(request)),
                Err(status) => Either::Right(Box::pin(async move { Err(status) })),
            };
        }
        let (inner, routing, wait) = (
            self.inner.clone(),
            self.routing.clone(),
            self.wait_for_table,
        );
        Either::Right(Box::pin(async move {
            let mut readiness = routing.readiness();
            let settled = tokio::time::timeout(
                wait,
                readiness.wait_for(|readiness| *readiness != Readiness::Pending),
            )
            .await;
            let service = routing.service();
            match settled.map(|outcome| outcome.map(|readiness| readiness.clone())) {
                Ok(Ok(Readiness::Ready)) => {
                    let live = routing.live().ok_or_else(|| {
                        Status::internal(format!("the routing table of {service} vanished"))
                    })?;
                    route(live, &mut request)?;
                    inner.oneshot(request).await
                }
                Ok(Ok(Readiness::Refused(reason))) => Err(Status::permission_denied(format!(
                    "cannot route calls to {service}: {reason}"
                ))),
                Ok(Ok(Readiness::Failed(reason))) => Err(Status::unavailable(format!(
                    "cannot route calls to {service}: {reason}"
                ))),
                Ok(Ok(Readiness::Pending)) | Ok(Err(_)) | Err(_) => {
                    let why = routing
                        .chain_state()
                        .last_error
                        .unwrap_or_else(|| "no answer yet".to_owned());
                    Err(Status::unavailable(format!(
                        "no routing table for {service} after {wait:?}: Consul's discovery chain: {why}"
                    )))
                }
            }
        }))
    }
}
