//! The retry policy (tower::retry with linkerd's budget, gRPC A6 rules):
//!
//! - a request that provably never reached a server (connection refused, no
//!   ready endpoint, REFUSED_STREAM) may be retried whatever the method;
//! - otherwise only methods the protos mark `IDEMPOTENT` or `NO_SIDE_EFFECTS`,
//!   and only on UNAVAILABLE, RESOURCE_EXHAUSTED, a per-try timeout, or a
//!   transport error;
//! - never on answers such as INVALID_ARGUMENT or FAILED_PRECONDITION;
//! - a call is committed once response headers without an error arrive;
//! - at most `max_attempts`, within the overall deadline, each retry paid
//!   from a shared [`TpsBudget`]; `grpc-retry-pushback-ms` is honoured
//!   (negative or malformed: do not retry);
//! - a `service-router` route may change two things for its calls:
//!   `NumRetries` sets the attempts (`NumRetries` + 1), and
//!   `RetryOnStatusCodes` (HTTP codes, mapped by gRPC's HTTP-to-status table,
//!   see `routing::codes`) adds codes retried — for idempotent methods only
//!   and within the budget, which is stricter than Envoy (ADR 0014).
//!   `RetryOnConnectFailure` needs nothing: a request that never reached a
//!   server is always retried.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::time::Instant;
use tonic::Code;
use tower::{
    retry::{
        budget::{Budget, TpsBudget},
        RetryLayer,
    },
    BoxError,
};

use super::{
    error::{answer_refused_locally, is_routing_refusal, is_timeout, never_reached_server},
    metrics::TargetMetrics,
    options::ClientOptions,
    route::Routed,
    routing::{CodeSet, RouteParams},
};
use crate::idempotency;

/// The number of attempts already made, carried in request extensions and
/// sent as `grpc-previous-rpc-attempts`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PreviousAttempts(pub(crate) u32);

/// The call's overall deadline, carried in request extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallDeadline(pub(crate) Instant);

/// Whether an outcome may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retryable {
    /// Not at all.
    No,
    /// Only for idempotent methods.
    IfIdempotent,
    /// Always: the request never reached a server.
    Always,
}

/// The gRPC status in response headers (a trailers-only error answer).
pub(crate) fn response_code(response: &http::Response<tonic::body::Body>) -> Option<Code> {
    crate::telemetry::grpc_status(response.headers()).filter(|code| *code != Code::Ok)
}

/// Whether an answer with `code` may be retried (idempotent methods only):
/// UNAVAILABLE, RESOURCE_EXHAUSTED, and what the route adds.
fn retryable_code(code: Code, route_adds: CodeSet) -> Retryable {
    match code {
        Code::Unavailable | Code::ResourceExhausted => Retryable::IfIdempotent,
        code if route_adds.contains(code) => Retryable::IfIdempotent,
        _ => Retryable::No,
    }
}

/// Classifies one attempt's result; `route_adds` are the codes the call's
/// route retries too (`RetryOnStatusCodes`).
pub(crate) fn classify(
    result: &Result<http::Response<tonic::body::Body>, BoxError>,
    route_adds: CodeSet,
) -> Retryable {
    match result {
        Ok(response) => {
            response_code(response).map_or(Retryable::No, |code| retryable_code(code, route_adds))
        }
        Err(error) if is_routing_refusal(&**error) => Retryable::No,
        Err(error) if never_reached_server(&**error) => Retryable::Always,
        // The server answered; the same request gets the same answer.
        Err(error) if answer_refused_locally(&**error) => Retryable::No,
        Err(error) if is_timeout(&**error) => Retryable::IfIdempotent,
        Err(error) => match error.downcast_ref::<tonic::Status>() {
            Some(status) => retryable_code(status.code(), route_adds),
            // Transport errors after the request may have been sent.
            None => Retryable::IfIdempotent,
        },
    }
}

/// What the call's route changes: the codes it adds, and the attempts
/// (`NumRetries` + 1, else `default_attempts`).
pub(crate) fn route_settings(
    params: Option<&RouteParams>,
    default_attempts: u32,
) -> (CodeSet, u32) {
    match params {
        Some(params) => (
            params.retry_on,
            params
                .num_retries
                .map_or(default_attempts, |retries| retries.saturating_add(1)),
        ),
        None => (CodeSet::default(), default_attempts),
    }
}

/// `grpc-retry-pushback-ms`: `Some(Some(delay))` to wait, `Some(None)` when the
/// server said not to retry, `None` when absent.
fn pushback(
    result: &Result<http::Response<tonic::body::Body>, BoxError>,
) -> Option<Option<Duration>> {
    let value = result
        .as_ref()
        .ok()?
        .headers()
        .get("grpc-retry-pushback-ms")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .filter(|millis| *millis >= 0)
            .map(|millis| Duration::from_millis(millis as u64)),
    )
}

/// The per-call retry policy; cloned for each call, sharing the budget.
#[derive(Clone)]
pub(crate) struct RetryPolicy {
    pub(crate) budget: Arc<TpsBudget>,
    pub(crate) max_attempts: u32,
    pub(crate) metrics: TargetMetrics,
    attempts: u32,
}

impl RetryPolicy {
    /// tower's `Retry` with this policy: at most `max_attempts` attempts per
    /// call, retries within one budget per target (`budget_*`).
    pub(crate) fn layer(options: &ClientOptions, metrics: TargetMetrics) -> RetryLayer<Self> {
        let budget = Arc::new(TpsBudget::new(
            options.budget_ttl,
            options.budget_min_per_sec,
            options.budget_retry_ratio,
        ));
        RetryLayer::new(Self::new(budget, options.max_attempts, metrics))
    }

    pub(crate) fn new(budget: Arc<TpsBudget>, max_attempts: u32, metrics: TargetMetrics) -> Self {
        Self {
            budget,
            max_attempts,
            metrics,
            attempts: 0,
        }
    }
}

type Request = http::Request<Bytes>;
type Response = http::Response<tonic::body::Body>;

impl tower::retry::Policy<Request, Response, BoxError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        request: &mut Request,
        result: &mut Result<Response, BoxError>,
    ) -> Option<Self::Future> {
        self.attempts += 1;
        if self.attempts == 1 {
            self.budget.deposit();
        }
        let params = request.extensions().get::<Routed>().map(|r| &*r.params);
        let (route_adds, max_attempts) = route_settings(params, self.max_attempts);
        let retryable = match classify(result, route_adds) {
            Retryable::No => return None,
            Retryable::IfIdempotent
                if !idempotency::of_path(request.uri().path()).is_retry_safe() =>
            {
                return None
            }
            retryable => retryable,
        };
        if self.attempts >= max_attempts {
            return None;
        }
        let delay = match pushback(result) {
            Some(None) => return None,
            Some(Some(delay)) => delay,
            // A short jittered pause; a refused connect is retried at once (another endpoint).
            None if retryable == Retryable::Always => Duration::ZERO,
            None => Duration::from_millis(rand::random_range(5..25)),
        };
        if let Some(CallDeadline(deadline)) = request.extensions().get::<CallDeadline>() {
            if Instant::now() + delay >= *deadline {
                return None;
            }
        }
        if !self.budget.withdraw() {
            self.metrics.budget_exhausted();
            return None;
        }
        self.metrics.retried();
        request
            .extensions_mut()
            .insert(PreviousAttempts(self.attempts));
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    fn clone_request(&mut self, request: &Request) -> Option<Request> {
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::retry::Policy;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy::new(
            Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            max_attempts,
            TargetMetrics::default(),
        )
    }

    fn request(path: &str) -> Request {
        http::Request::builder()
            .uri(format!("http://x{path}"))
            .body(Bytes::new())
            .unwrap()
    }

    fn answer(status: tonic::Status) -> Result<Response, BoxError> {
        Ok(status.into_http())
    }

    #[tokio::test]
    async fn retries_idempotent_methods_on_unavailable_only() {
        let mut policy = policy(3);
        let mut get = request("/mesh.users.v1.Users/GetUser");
        assert!(policy
            .retry(&mut get, &mut answer(tonic::Status::unavailable("x")))
            .is_some());
        assert!(policy
            .retry(&mut get, &mut answer(tonic::Status::invalid_argument("x")))
            .is_none());
        assert!(policy
            .retry(
                &mut get,
                &mut answer(tonic::Status::failed_precondition("x"))
            )
            .is_none());
        let mut add_stock = request("/mesh.inventory.v1.Inventory/AddStock");
        assert!(policy
            .retry(&mut add_stock, &mut answer(tonic::Status::unavailable("x")))
            .is_none());
    }

    #[tokio::test]
    async fn retries_any_method_that_never_reached_a_server() {
        let mut policy = policy(3);
        let mut add_stock = request("/mesh.inventory.v1.Inventory/AddStock");
        let refused: BoxError =
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(policy.retry(&mut add_stock, &mut Err(refused)).is_some());
        let reset: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(
            policy.retry(&mut add_stock, &mut Err(reset)).is_none(),
            "a reset may have reached the server"
        );
        assert_eq!(
            add_stock
                .extensions()
                .get::<PreviousAttempts>()
                .map(|p| p.0),
            Some(1)
        );
    }

    #[tokio::test]
    async fn stops_at_max_attempts_and_honours_pushback() {
        let mut policy = policy(2);
        let mut get = request("/mesh.users.v1.Users/GetUser");
        assert!(policy
            .retry(&mut get, &mut answer(tonic::Status::unavailable("x")))
            .is_some());
        assert!(policy
            .retry(&mut get, &mut answer(tonic::Status::unavailable("x")))
            .is_none());

        let mut policy = self::policy(3);
        let mut response = tonic::Status::unavailable("x").into_http();
        response
            .headers_mut()
            .insert("grpc-retry-pushback-ms", "-1".parse().unwrap());
        assert!(policy.retry(&mut get, &mut Ok(response)).is_none());
    }

    #[tokio::test]
    async fn the_budget_caps_retries() {
        // No deposits but the first, a floor of 1 retry per second.
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(1), 1, 0.0));
        let metrics = TargetMetrics::default();
        let mut allowed = 0;
        for _ in 0..50 {
            let mut policy = RetryPolicy::new(budget.clone(), 3, metrics.clone());
            let mut get = request("/mesh.users.v1.Users/GetUser");
            if policy
                .retry(&mut get, &mut answer(tonic::Status::unavailable("x")))
                .is_some()
            {
                allowed += 1;
            }
        }
        assert!(allowed <= 2, "the budget allowed {allowed} retries");
        assert!(metrics.snapshot().budget_exhausted >= 48);
    }

    #[test]
    fn a_route_adds_codes_for_idempotent_methods_and_sets_the_attempts() {
        let not_found: Result<Response, BoxError> =
            answer(tonic::Status::unimplemented("old server"));
        assert_eq!(classify(&not_found, CodeSet::default()), Retryable::No);
        let adds = CodeSet::from_http(&[404]);
        assert_eq!(classify(&not_found, adds), Retryable::IfIdempotent);
        let as_error: Result<Response, BoxError> = Err(Box::new(tonic::Status::unimplemented("x")));
        assert_eq!(classify(&as_error, adds), Retryable::IfIdempotent);
        let invalid = answer(tonic::Status::invalid_argument("x"));
        assert_eq!(classify(&invalid, adds), Retryable::No);

        let params = RouteParams {
            num_retries: Some(4),
            retry_on: adds,
            ..RouteParams::default()
        };
        assert_eq!(route_settings(Some(&params), 3), (adds, 5));
        let unset = RouteParams::default();
        assert_eq!(route_settings(Some(&unset), 3), (CodeSet::default(), 3));
        assert_eq!(route_settings(None, 2), (CodeSet::default(), 2));
    }

    #[test]
    fn a_refused_target_is_never_retried() {
        let refused: Result<Response, BoxError> =
            Err(Box::new(super::super::error::TargetRefused {
                target: "legacy".into(),
                reason: "the token needs service:read".into(),
            }));
        assert_eq!(classify(&refused, CodeSet::default()), Retryable::No);
    }

    #[tokio::test]
    async fn does_not_retry_past_the_deadline() {
        let mut policy = policy(3);
        let mut get = request("/mesh.users.v1.Users/GetUser");
        get.extensions_mut().insert(CallDeadline(Instant::now()));
        assert!(policy
            .retry(&mut get, &mut answer(tonic::Status::unavailable("x")))
            .is_none());
    }
}
