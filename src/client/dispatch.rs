//! [`Dispatch`], each attempt's last step before a balancer: takes the
//! resolver its call was routed to ([`Routed`]) and sends the attempt to the
//! first of its targets that Consul lists healthy instances of — the target
//! itself, else its failover targets in order (and back as soon as the
//! target has instances again). A target whose watch Consul refused is never
//! taken for one without instances: the attempt fails with
//! PERMISSION_DENIED instead of failing over. It counts requests, retries,
//! failovers and latency per chain target and writes the target on the
//! call's span (`mesh.chain_target`).

use std::{
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{BoxError, Service};
use tracing::Span;

use super::{
    error::{TargetRefused, Unroutable},
    retry::PreviousAttempts,
    route::Routed,
    shared::Dispatched,
    stack::Balancer,
    targets::{TargetHealth, TargetStack},
};

/// The dispatching service (see the module docs); stateless.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Dispatch;

/// The target an attempt goes to, or why it cannot go anywhere.
fn select(routed: &Routed) -> Result<&Arc<TargetStack>, BoxError> {
    let live = &routed.live;
    let resolver = &live.table.resolvers()[routed.resolver];
    if let Some(reason) = &resolver.unroutable {
        return Err(Box::new(Unroutable {
            service: live.table.service().to_owned(),
            resolver: resolver.name.clone(),
            reason: reason.clone(),
        }));
    }
    let Some(&primary) = resolver.targets.first() else {
        return Err(Box::new(Unroutable {
            service: live.table.service().to_owned(),
            resolver: resolver.name.clone(),
            reason: "it has no target".to_owned(),
        }));
    };
    for (position, &index) in resolver.targets.iter().enumerate() {
        let stack = &live.targets[index];
        match stack.health() {
            TargetHealth::Available | TargetHealth::Unknown => {
                for skipped in &resolver.targets[..position] {
                    let skipped = &live.targets[*skipped];
                    if skipped.health() == TargetHealth::NoInstance {
                        skipped.counters.failovers.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return Ok(stack);
            }
            TargetHealth::Refused if position == 0 => {
                return Err(Box::new(TargetRefused {
                    target: stack.spec.display_name(),
                    reason: stack.refusal().unwrap_or_default(),
                }));
            }
            TargetHealth::NoInstance | TargetHealth::Refused => {}
        }
    }
    // Nobody has an instance: the target itself fails fast, naming it.
    Ok(&live.targets[primary])
}

impl Service<http::Request<Bytes>> for Dispatch {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each target's balancer is awaited per attempt.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let Some(routed) = request.extensions().get::<Routed>() else {
            return Box::pin(async {
                Err("internal: an attempt without a routing decision".into())
            });
        };
        let stack = match select(routed) {
            Ok(stack) => stack.clone(),
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        let retry = request
            .extensions()
            .get::<PreviousAttempts>()
            .is_some_and(|previous| previous.0 > 0);
        let counter = if retry {
            &stack.counters.retries
        } else {
            &stack.counters.requests
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let span = Span::current();
        if !span.is_disabled() {
            span.record("mesh.chain_target", stack.spec.id.as_str());
        }
        let attempt = stack.channel.dispatch(request);
        Box::pin(Timed {
            attempt,
            stack,
            started: Instant::now(),
        })
    }
}

pin_project_lite::pin_project! {
    /// An attempt whose latency is recorded for its target when it answers.
    struct Timed {
        #[pin]
        attempt: Dispatched<Balancer, http::Request<Bytes>>,
        stack: Arc<TargetStack>,
        started: Instant,
    }
}

impl Future for Timed {
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.attempt.poll(cx));
        this.stack.observe(this.started.elapsed());
        Poll::Ready(result)
    }
}
