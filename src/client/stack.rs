//! Assembles one target service's stack, outermost first:
//!
//! 1. [`MeshCall`]: buffers the request body (so attempts can replay it),
//!    fixes the call's deadline (own `grpc-timeout`, the incoming RPC's
//!    remaining time, or the default), bounds the whole call by it, and turns
//!    every failure into a `tonic::Status` in one place;
//! 2. `tower::retry::Retry` with [`RetryPolicy`] and a shared `TpsBudget`;
//! 3. [`Attempt`]: per-try timeout and gRPC retry headers;
//! 4. `tower::buffer::Buffer`: one balancer shared by every clone of the channel;
//! 5. [`FailFast`]: UNAVAILABLE instead of waiting forever for an endpoint;
//! 6. `tower::balance::p2c::Balance`: power of two choices by load;
//! 7. [`Ejectable`]: passive health per endpoint; its load ranks failing
//!    endpoints last, then by
//! 8. `PeakEwma` latency;
//! 9. one lazily connected tonic `Channel` (HTTP/2, Connect mTLS when the
//!    options carry an identity) per endpoint, from `discovery::Resolver`'s
//!    Consul watch.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use discovery::Resolver;
use futures::StreamExt;
use http_body_util::{BodyExt, Limited};
use tonic::{body::Body, Status};
use tower::{
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, PeakEwma},
    retry::{budget::TpsBudget, Retry},
    util::BoxService,
    BoxError, Service, ServiceExt,
};

use super::{
    attempt::Attempt,
    connector::endpoint_channel,
    deadline,
    eject::{EjectPolicy, Ejectable},
    error::{into_status, BodyError, DeadlineExceeded},
    failfast::FailFast,
    instrument::{ClientTrace, EndpointObserve},
    metrics::TargetMetrics,
    options::ClientOptions,
    retry::{response_code, CallDeadline, PreviousAttempts, RetryPolicy},
    Channel,
};
use crate::server::MAX_MESSAGE_BYTES;

type Balanced = Buffer<
    http::Request<Body>,
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>,
>;

/// Builds the channel of `service` over `resolver`'s endpoints.
pub(crate) fn build(
    service: &str,
    resolver: &Resolver,
    options: &ClientOptions,
    metrics: TargetMetrics,
) -> Channel {
    let balanced = balancer(service, resolver, options, metrics.clone());
    let budget = Arc::new(TpsBudget::new(
        options.budget_ttl,
        options.budget_min_per_sec,
        options.budget_retry_ratio,
    ));
    let retry = Retry::new(
        RetryPolicy::new(budget, options.max_attempts, metrics.clone()),
        Attempt::new(balanced, options.per_try_timeout),
    );
    Channel::new(ClientTrace::new(
        service,
        MeshCall {
            service: service.into(),
            retry,
            default_deadline: options.default_deadline,
            metrics,
        },
    ))
}

fn balancer(
    service: &str,
    resolver: &Resolver,
    options: &ClientOptions,
    metrics: TargetMetrics,
) -> Balanced {
    let policy = EjectPolicy {
        threshold: options.eject_after_failures.max(1),
        min_backoff: options.eject_min_backoff,
        max_backoff: options.eject_max_backoff,
    };
    let connect_timeout = options.connect_timeout;
    let identity = options.identity.clone();
    let default_rtt = options.ewma_default_rtt;
    let decay_ns = options.ewma_decay.as_nanos() as f64;
    let target = service.to_owned();
    // The ids the balancer holds, for the `endpoints` count (an Insert may
    // replace an endpoint whose address changed).
    let mut held = std::collections::HashSet::new();
    let endpoints = resolver.discover().map(move |change| {
        change.map(|change| match change {
            Change::Insert(id, endpoint) => {
                held.insert(id.clone());
                metrics.set_endpoints(held.len());
                tracing::debug!(service = %target, %id, address = %endpoint.address, "endpoint added");
                let metrics = metrics.clone();
                let (service, address) = (target.clone(), endpoint.address);
                let on_eject = Arc::new(move |backoff: Duration| {
                    metrics.ejected();
                    tracing::warn!(%service, %address, ?backoff, "endpoint ejected after consecutive failures");
                });
                let channel = endpoint_channel(&endpoint.address.to_string(), &target, identity.as_ref(), connect_timeout)
                    .expect("a socket address is a valid URI authority");
                let observed = EndpointObserve::new(&target, endpoint.address, channel);
                let measured = PeakEwma::new(observed, default_rtt, decay_ns, CompleteOnResponse::default());
                Change::Insert(id, Ejectable::new(measured, policy, on_eject))
            }
            Change::Remove(id) => {
                held.remove(&id);
                metrics.set_endpoints(held.len());
                tracing::debug!(service = %target, %id, "endpoint removed");
                Change::Remove(id)
            }
        })
    });
    let balance = Balance::new(endpoints);
    let fail_fast = FailFast::new(balance, service, options.fail_fast_after);
    Buffer::new(BoxService::new(fail_fast), 1024)
}

/// The outermost layer (see the module docs).
#[derive(Clone)]
struct MeshCall<S> {
    service: Arc<str>,
    retry: S,
    default_deadline: Duration,
    metrics: TargetMetrics,
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
        let retry = self.retry.clone();
        let service = self.service.clone();
        let metrics = self.metrics.clone();
        let deadline = deadline::for_request(request.headers(), self.default_deadline);
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
            let outcome = tokio::time::timeout_at(deadline, retry.oneshot(request)).await;
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
