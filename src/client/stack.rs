//! Assembles one target service's stack with `tower::ServiceBuilder`, in this
//! order, outermost first. Every number a layer uses is a field of
//! [`ClientOptions`] (`src/client/options.rs`, with its default).
//!
//! 1. [`ClientTrace`]: the call's `grpc.client` span and `traceparent`;
//! 2. [`MeshCall`]: buffers the request body (so attempts can replay it),
//!    fixes the call's deadline (own `grpc-timeout`, the incoming RPC's
//!    remaining time, or `default_deadline`), bounds the whole call by it, and
//!    turns every failure into a `tonic::Status` in one place;
//! 3. `tower::retry::Retry` with [`RetryPolicy`] and a shared `TpsBudget`
//!    (`max_attempts`, `budget_*`);
//! 4. [`Attempt`]: per-try timeout (`per_try_timeout`) and gRPC retry headers;
//! 5. `tower::buffer::Buffer` (`buffer_capacity`): one balancer shared by
//!    every clone of the channel;
//! 6. [`FailFast`] (`fail_fast_after`): UNAVAILABLE instead of waiting
//!    forever for an endpoint;
//! 7. `tower::balance::p2c::Balance`: power of two choices by load, over the
//!    endpoints of `discovery::Resolver`'s Consul watch, each of them
//!    (see [`endpoint`]):
//! 8. [`Ejectable`] (`eject_*`): passive health; its load ranks failing
//!    endpoints last, then by
//! 9. `PeakEwma` latency (`ewma_*`);
//! 10. [`EndpointObserve`]: per-endpoint request count and span fields;
//! 11. one lazily connected tonic `Channel` (HTTP/2 with `http2_keepalive_*`,
//!     `connect_timeout`, Connect mTLS when the options carry an identity).

use std::{sync::Arc, time::Duration};

use discovery::{Endpoint, Resolver};
use futures::StreamExt;
use tower::{
    balance::p2c::Balance,
    buffer::BufferLayer,
    discover::Change,
    layer::layer_fn,
    load::{CompleteOnResponse, PeakEwma},
    Layer, ServiceBuilder,
};

use super::{
    attempt::Attempt,
    call::MeshCall,
    connector::endpoint_channel,
    eject::{EjectPolicy, Ejectable},
    failfast::FailFast,
    instrument::{ClientTrace, EndpointObserve},
    metrics::TargetMetrics,
    options::ClientOptions,
    retry::RetryPolicy,
    Channel,
};

/// Builds the channel of `service` over `resolver`'s endpoints.
pub(crate) fn build(
    service: &str,
    resolver: &Resolver,
    options: &ClientOptions,
    metrics: TargetMetrics,
) -> Channel {
    let mut to_balancer = endpoint_changes(service, options, metrics.clone());
    let endpoints = resolver
        .discover()
        .map(move |change| change.map(&mut to_balancer));
    let stack = ServiceBuilder::new()
        .layer(ClientTrace::layer(service))
        .layer(MeshCall::layer(
            service,
            options.default_deadline,
            metrics.clone(),
        ))
        .layer(RetryPolicy::layer(options, metrics))
        .layer(Attempt::layer(options.per_try_timeout))
        .layer(BufferLayer::new(options.buffer_capacity))
        .layer(FailFast::layer(service, options.fail_fast_after))
        .service(Balance::new(endpoints));
    Channel::new(stack)
}

/// Turns the resolver's endpoint changes into balancer changes, building each
/// new endpoint's stack and keeping the `endpoints` count.
fn endpoint_changes(
    target: &str,
    options: &ClientOptions,
    metrics: TargetMetrics,
) -> impl FnMut(Change<String, Endpoint>) -> Change<String, EndpointService> {
    let target: Arc<str> = target.into();
    let options = options.clone();
    // The ids the balancer holds (an Insert may replace an endpoint whose
    // address changed).
    let mut held = std::collections::HashSet::new();
    move |change| match change {
        Change::Insert(id, found) => {
            held.insert(id.clone());
            metrics.set_endpoints(held.len());
            tracing::debug!(service = %target, %id, address = %found.address, "endpoint added");
            Change::Insert(id, endpoint(&target, found, &options, &metrics))
        }
        Change::Remove(id) => {
            held.remove(&id);
            metrics.set_endpoints(held.len());
            tracing::debug!(service = %target, %id, "endpoint removed");
            Change::Remove(id)
        }
    }
}

/// One endpoint's stack (items 8 to 11 of the module docs).
type EndpointService = Ejectable<PeakEwma<EndpointObserve<tonic::transport::Channel>>>;

fn endpoint(
    target: &str,
    found: Endpoint,
    options: &ClientOptions,
    metrics: &TargetMetrics,
) -> EndpointService {
    let address = found.address;
    let on_eject = {
        let (metrics, service) = (metrics.clone(), target.to_owned());
        Arc::new(move |backoff: Duration| {
            metrics.ejected();
            tracing::warn!(%service, %address, ?backoff, "endpoint ejected after consecutive failures");
        })
    };
    let channel = endpoint_channel(&address.to_string(), target, options)
        .expect("a socket address is a valid URI authority");
    ServiceBuilder::new()
        .layer(Ejectable::layer(EjectPolicy::from(options), on_eject))
        .layer(peak_ewma(options))
        .layer(EndpointObserve::layer(target, address))
        .service(channel)
}

/// tower's `PeakEwma` with the options' default RTT and decay.
fn peak_ewma<S>(options: &ClientOptions) -> impl Layer<S, Service = PeakEwma<S>> {
    let default_rtt = options.ewma_default_rtt;
    let decay_ns = options.ewma_decay.as_nanos() as f64;
    layer_fn(move |inner| {
        PeakEwma::new(inner, default_rtt, decay_ns, CompleteOnResponse::default())
    })
}
