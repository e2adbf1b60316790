//! Assembles the application service's stack with `tower::ServiceBuilder`,
//! in this order, outermost first. Health and reflection are served beside it
//! (in the same tonic `Routes`) and pass through none of it; below all of it,
//! per connection, the mTLS acceptor (`tls`, `authz`) has already verified
//! and authorized the caller.
//!
//! 1. [`Observe`]: the `grpc.server` span, continuing the caller's trace, and
//!    the RED metrics — recorded with the codes the caller receives, so it
//!    sits outside the layer that fixes them;
//! 2. [`SpecStatusCodes`]: the gRPC spec's codes where tonic's differ
//!    (RESOURCE_EXHAUSTED for a message over the limit, DEADLINE_EXCEEDED once
//!    the request's `grpc-timeout` passes: the server's only timer);
//! 3. [`DeadlineScope`]: the incoming deadline made visible to the handler's
//!    task, so that calls it makes through the mesh client inherit what is
//!    left of it;
//! 4. with the `inject-latency` feature only (the test builds enable it):
//!    `InjectLatency`, which delays each reply by `--inject-latency`, so that
//!    balancing, retry and saga tests can slow one real instance down;
//! 5. the application service (the tonic server generated from its proto).

use tower::ServiceBuilder;

use super::{deadline_scope::DeadlineScope, observe::Observe, status_codes::SpecStatusCodes};
use crate::config::ServiceArgs;

#[cfg(feature = "inject-latency")]
type Injected<S> = super::latency::InjectLatency<S>;
#[cfg(not(feature = "inject-latency"))]
type Injected<S> = S;

/// The application service wrapped in the server's layers (items 1 to 4).
pub(crate) type Application<S> = Observe<SpecStatusCodes<DeadlineScope<Injected<S>>>>;

/// Wraps `service` in the server's layers, as `args` configure them.
pub(crate) fn application<S>(service: S, args: &ServiceArgs) -> Application<S>
where
    S: tonic::server::NamedService + Clone + Send + 'static,
{
    ServiceBuilder::new()
        .layer(Observe::layer())
        .layer(SpecStatusCodes::layer())
        .layer(DeadlineScope::layer())
        .layer(inject_latency(args))
        .service(service)
}

/// Item 4: the test-only delay, or nothing.
#[cfg(feature = "inject-latency")]
fn inject_latency<S>(args: &ServiceArgs) -> impl tower::Layer<S, Service = Injected<S>> {
    super::latency::InjectLatency::layer(args.inject_latency)
}

/// Item 4 without the feature: nothing.
#[cfg(not(feature = "inject-latency"))]
fn inject_latency(_args: &ServiceArgs) -> tower::layer::util::Identity {
    tower::layer::util::Identity::new()
}
