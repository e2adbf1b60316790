//! Assembles the client's stacks with `tower::ServiceBuilder`. Every number a
//! layer uses is a field of [`ClientOptions`] (`src/client/options.rs`, with
//! its default).
//!
//! One target service's channel, outermost first:
//!
//! 1. [`ClientTrace`]: the call's `grpc.client` span and `traceparent`;
//! 2. [`Route`]: the routing decision, once per call, on the table compiled
//!    from the service's discovery chain (route, splitter, resolver);
//! 3. [`MeshCall`]: buffers the request body (so attempts can replay it),
//!    fixes the call's deadline (own `grpc-timeout`, the incoming RPC's
//!    remaining time, or `default_deadline`; no later than the route's
//!    `RequestTimeout`), bounds the whole call by it, and turns every failure
//!    into a `tonic::Status` in one place;
//! 4. `tower::retry::Retry` with [`RetryPolicy`] and a shared `TpsBudget`
//!    (`max_attempts` or the route's `NumRetries`, `budget_*`);
//! 5. [`Attempt`]: per-try timeout (`per_try_timeout`) and gRPC retry headers;
//! 6. [`Dispatch`]: the resolver's target, or its failover target when the
//!    target has no healthy instance; then that target's balancer
//!    ([`target_channel`], one per chain target):
//! 7. [`SharedBalancer`]: one balancer shared by every call routed to the
//!    target, without a queue: each call drives it from its own task (one
//!    queue hop fewer than a `tower::buffer::Buffer`, ADR 0021);
//! 8. [`FailFast`] (`fail_fast_after`): UNAVAILABLE instead of waiting
//!    forever for an endpoint;
//! 9. `tower::balance::p2c::Balance`: power of two choices by load, over the
//!    endpoints of the target's `discovery::Resolver` (its subset filter),
//!    each of them (see [`endpoint`]):
//! 10. [`Ejectable`] (`eject_*`): passive health; its load ranks failing
//!     endpoints last, then by
//! 11. `PeakEwma` latency (`ewma_*`);
//! 12. [`EndpointObserve`]: per-endpoint request count and span fields;
//! 13. [`Http2Endpoint`]: one lazily connected HTTP/2 connection that each
//!     call drives from its own task (keep-alive PINGs `http2_keepalive_*`,
//!     the resolver's `ConnectTimeout` or `connect_timeout`, Connect mTLS with
//!     the target service's identity when the options carry one; ADR 0022).

use std::{
    collections::HashSet,
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use discovery::{Endpoint, Resolver};
use futures::{Stream, StreamExt};
use tower::{
    balance::p2c::Balance,
    discover::Change,
    layer::layer_fn,
    load::{CompleteOnResponse, PeakEwma},
    Layer, ServiceBuilder,
};

use super::{
    attempt::Attempt,
    call::MeshCall,
    dispatch::Dispatch,
    eject::{EjectPolicy, Ejectable},
    endpoint::Http2Endpoint,
    failfast::FailFast,
    instrument::{ClientTrace, EndpointObserve},
    live::ServiceRouting,
    metrics::TargetMetrics,
    options::ClientOptions,
    retry::RetryPolicy,
    route::Route,
    routing::TargetSpec,
    shared::SharedBalancer,
    targets::TargetChannel,
    Channel,
};

/// Builds the channel of `routing`'s service (items 1 to 6 of the module docs).
pub(crate) fn build(
    routing: Arc<ServiceRouting>,
    options: &ClientOptions,
    metrics: TargetMetrics,
) -> Channel {
    let service = routing.service().to_owned();
    let stack = ServiceBuilder::new()
        .layer(ClientTrace::layer(&service))
        .layer(Route::layer(routing, options.fail_fast_after))
        .layer(MeshCall::layer(
            &service,
            options.default_deadline,
            metrics.clone(),
        ))
        .layer(RetryPolicy::layer(options, metrics))
        .layer(Attempt::layer(options.per_try_timeout))
        .service(Dispatch);
    Channel::new(stack)
}

/// The endpoint changes a target's balancer follows.
type EndpointChanges =
    Pin<Box<dyn Stream<Item = Result<Change<String, EndpointService>, Infallible>> + Send>>;

/// One chain target's balancer (items 8 to 13 of the module docs).
pub(crate) type Balancer = FailFast<Balance<EndpointChanges, http::Request<Bytes>>>;

/// Builds the balancer of one chain target over `resolver`'s endpoints
/// (items 7 to 13 of the module docs).
pub(crate) fn target_channel(
    target: &TargetSpec,
    resolver: &Resolver,
    options: &ClientOptions,
    metrics: &TargetMetrics,
) -> TargetChannel {
    let mut options = options.clone();
    if let Some(timeout) = target.connect_timeout {
        options.connect_timeout = timeout;
    }
    let mut to_balancer = endpoint_changes(&target.service, &options, metrics.clone());
    let endpoints: EndpointChanges = Box::pin(
        resolver
            .discover()
            .map(move |change| change.map(&mut to_balancer)),
    );
    let fail_fast = FailFast::new(
        Balance::new(endpoints),
        &target.display_name(),
        options.fail_fast_after,
    );
    SharedBalancer::new(fail_fast)
}

/// How many endpoints one balancer holds, kept in the service's count (the
/// sum over its targets' balancers) until the balancer goes.
struct Held {
    ids: HashSet<String>,
    metrics: TargetMetrics,
    count: Arc<AtomicU64>,
}

impl Held {
    fn set(&mut self) {
        let now = self.ids.len() as u64;
        let before = self.count.swap(now, Ordering::Relaxed);
        self.metrics.add_endpoints(now as i64 - before as i64);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let before = self.count.swap(0, Ordering::Relaxed);
        self.metrics.add_endpoints(-(before as i64));
    }
}

/// Turns a resolver's endpoint changes into balancer changes, building each
/// new endpoint's stack and keeping the `endpoints` count.
fn endpoint_changes(
    service: &str,
    options: &ClientOptions,
    metrics: TargetMetrics,
) -> impl FnMut(Change<String, Endpoint>) -> Change<String, EndpointService> {
    let service: Arc<str> = service.into();
    let options = options.clone();
    // The ids the balancer holds (an Insert may replace an endpoint whose
    // address changed).
    let mut held = Held {
        ids: HashSet::new(),
        metrics: metrics.clone(),
        count: Arc::default(),
    };
    move |change| match change {
        Change::Insert(id, found) => {
            held.ids.insert(id.clone());
            held.set();
            tracing::debug!(%service, %id, address = %found.address, "endpoint added");
            Change::Insert(id, endpoint(&service, found, &options, &metrics))
        }
        Change::Remove(id) => {
            held.ids.remove(&id);
            held.set();
            tracing::debug!(%service, %id, "endpoint removed");
            Change::Remove(id)
        }
    }
}

/// One endpoint's stack (items 10 to 13 of the module docs).
pub(crate) type EndpointService = Ejectable<PeakEwma<EndpointObserve<Http2Endpoint>>>;

fn endpoint(
    service: &str,
    found: Endpoint,
    options: &ClientOptions,
    metrics: &TargetMetrics,
) -> EndpointService {
    let address = found.address;
    let on_eject = {
        let (metrics, service) = (metrics.clone(), service.to_owned());
        Arc::new(move |backoff: Duration| {
            metrics.ejected();
            tracing::warn!(%service, %address, ?backoff, "endpoint ejected after consecutive failures");
        })
    };
    let connection = Http2Endpoint::new(&address.to_string(), service, options)
        .expect("a socket address is a valid URI authority");
    ServiceBuilder::new()
        .layer(Ejectable::layer(EjectPolicy::from(options), on_eject))
        .layer(peak_ewma(options))
        .layer(EndpointObserve::layer(service, address))
        .service(connection)
}

/// tower's `PeakEwma` with the options' default RTT and decay.
fn peak_ewma<S>(options: &ClientOptions) -> impl Layer<S, Service = PeakEwma<S>> {
    let default_rtt = options.ewma_default_rtt;
    let decay_ns = options.ewma_decay.as_nanos() as f64;
    layer_fn(move |inner| {
        PeakEwma::new(inner, default_rtt, decay_ns, CompleteOnResponse::default())
    })
}
