//! Passive health ("failure accrual", as linkerd calls it): an endpoint that
//! fails `threshold` times in a row — transport errors: no connection, a
//! connection lost, a stream the server reset — reports itself not ready for
//! a backoff period, so the balancer routes around it. When the period ends
//! it is ready again on probation: one more failure ejects it for twice as
//! long (up to the maximum, with jitter), one success restores it fully.
//!
//! An answer of the server is never a failure here, whatever it says: any
//! gRPC status (UNAVAILABLE and INTERNAL included: the server is up and
//! answering, and one request must not be able to eject it), and an answer
//! our HTTP/2 layer refused (headers over the header-list limit), which
//! neither proves nor disproves anything about the endpoint.
//!
//! Its load, for the balancer, is `(failing, peak-EWMA cost)` compared in
//! that order: an endpoint whose last outcome was a failure, or that last
//! answered UNAVAILABLE or RESOURCE_EXHAUSTED (it sheds work), loses every
//! power-of-two comparison against one that is not, however fast those
//! answers come back (a refused connection or a shed request is quicker
//! than any real answer, and would otherwise attract traffic). An endpoint
//! on probation is not penalised, so that it receives its probe.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use discovery::{Backoff, Jitter};
use tokio::time::{Instant, Sleep};
use tower::{layer::layer_fn, load::Load, Layer, Service};

use super::{error::answer_refused_locally, options::ClientOptions, retry::response_code};

/// An endpoint's error, whose cause chain ejection reads.
pub(crate) trait ErrorChain {
    fn as_error(&self) -> &(dyn std::error::Error + 'static);
}

impl ErrorChain for tonic::transport::Error {
    fn as_error(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}

impl ErrorChain for tower::BoxError {
    fn as_error(&self) -> &(dyn std::error::Error + 'static) {
        &**self
    }
}

/// Ejection settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EjectPolicy {
    pub(crate) threshold: u32,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

#[derive(Debug)]
struct Health {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    /// The ejection periods: doubling from `min_backoff` to `max_backoff`,
    /// ±25 % so that endpoints ejected together do not return together.
    backoff: Backoff,
    ejections: u64,
    probation: bool,
    /// The last answer was UNAVAILABLE or RESOURCE_EXHAUSTED.
    shedding: bool,
}

impl EjectPolicy {
    fn backoff(&self) -> Backoff {
        Backoff::new(self.min_backoff, self.max_backoff).with_jitter(Jitter::Around(0.25))
    }
}

/// What happened to a request, as ejection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// An answer (any status but the two below).
    Success,
    /// An UNAVAILABLE or RESOURCE_EXHAUSTED answer: the endpoint works and
    /// says it is busy; not a failure, but it ranks last until it serves.
    Shed,
    /// The server answered, our HTTP/2 layer refused the answer: nothing.
    Refused,
    /// A transport failure.
    Failure,
}

/// An endpoint service with failure accrual.
pub(crate) struct Ejectable<S> {
    inner: S,
    policy: EjectPolicy,
    health: Arc<Mutex<Health>>,
    sleep: Option<Pin<Box<Sleep>>>,
    on_eject: Arc<dyn Fn(Duration) + Send + Sync>,
}

impl From<&ClientOptions> for EjectPolicy {
    fn from(options: &ClientOptions) -> Self {
        Self {
            threshold: options.eject_after_failures.max(1),
            min_backoff: options.eject_min_backoff,
            max_backoff: options.eject_max_backoff,
        }
    }
}

impl<S> Ejectable<S> {
    /// Failure accrual by `policy`; `on_eject` is told each ejection's period.
    pub(crate) fn layer(
        policy: EjectPolicy,
        on_eject: Arc<dyn Fn(Duration) + Send + Sync>,
    ) -> impl Layer<S, Service = Self> + Clone {
        layer_fn(move |inner| Self::new(inner, policy, on_eject.clone()))
    }

    pub(crate) fn new(
        inner: S,
        policy: EjectPolicy,
        on_eject: Arc<dyn Fn(Duration) + Send + Sync>,
    ) -> Self {
        Self {
            inner,
            policy,
            health: Arc::new(Mutex::new(Health {
                consecutive_failures: 0,
                ejected_until: None,
                backoff: policy.backoff(),
                ejections: 0,
                probation: false,
                shedding: false,
            })),
            sleep: None,
            on_eject,
        }
    }

    #[cfg(test)]
    fn ejections(&self) -> u64 {
        self.health.lock().expect("health lock").ejections
    }
}

fn record(
    health: &Mutex<Health>,
    policy: EjectPolicy,
    outcome: Outcome,
    on_eject: &(dyn Fn(Duration) + Send + Sync),
) {
    let mut health = health.lock().expect("health lock");
    match outcome {
        Outcome::Success | Outcome::Shed => {
            health.consecutive_failures = 0;
            health.backoff.reset();
            health.probation = false;
            health.shedding = outcome == Outcome::Shed;
        }
        Outcome::Refused => {}
        Outcome::Failure => {
            health.consecutive_failures += 1;
            if health.consecutive_failures >= policy.threshold && health.ejected_until.is_none() {
                let backoff = health.backoff.next_delay();
                health.ejected_until = Some(Instant::now() + backoff);
                // On probation after the backoff: the next failure ejects again.
                health.consecutive_failures = policy.threshold - 1;
                health.ejections += 1;
                health.probation = false;
                drop(health);
                on_eject(backoff);
            }
        }
    }
}

impl<S, B> Service<http::Request<B>> for Ejectable<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: ErrorChain,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let ejected_until = self.health.lock().expect("health lock").ejected_until;
        if let Some(until) = ejected_until {
            if Instant::now() < until {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                if sleep.deadline() != until {
                    sleep.as_mut().reset(until);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            let mut health = self.health.lock().expect("health lock");
            health.ejected_until = None;
            health.probation = true;
            drop(health);
            self.sleep = None;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let health = self.health.clone();
        let policy = self.policy;
        let on_eject = self.on_eject.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let outcome = match &result {
                Ok(response) => match response_code(response) {
                    Some(tonic::Code::Unavailable | tonic::Code::ResourceExhausted) => {
                        Outcome::Shed
                    }
                    _ => Outcome::Success,
                },
                Err(error) if answer_refused_locally(error.as_error()) => Outcome::Refused,
                Err(_) => Outcome::Failure,
            };
            record(&health, policy, outcome, &*on_eject);
            result
        })
    }
}

impl<S: Load> Load for Ejectable<S> {
    /// `(1 if failing or shedding and not on probation else 0, the inner load)`.
    type Metric = (u8, S::Metric);

    fn load(&self) -> Self::Metric {
        let health = self.health.lock().expect("health lock");
        let failing = (health.consecutive_failures > 0 || health.shedding) && !health.probation;
        (u8::from(failing), self.inner.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio_test::{assert_pending, assert_ready_ok};
    use tower_test::mock;

    fn policy() -> EjectPolicy {
        EjectPolicy {
            threshold: 3,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        }
    }

    fn unavailable() -> http::Response<tonic::body::Body> {
        tonic::Status::unavailable("down").into_http()
    }

    fn ok() -> http::Response<tonic::body::Body> {
        http::Response::new(tonic::body::Body::empty())
    }

    type Handle = mock::Handle<http::Request<()>, http::Response<tonic::body::Body>>;

    /// One request through `service` that fails in transport (connection reset).
    async fn fail<S>(service: &mut mock::Spawn<S>, handle: &mut Handle)
    where
        S: Service<http::Request<()>, Response = http::Response<tonic::body::Body>>,
        S::Error: std::fmt::Debug,
    {
        let response = service.call(http::Request::new(()));
        handle
            .next_request()
            .await
            .unwrap()
            .1
            .send_error(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        response.await.unwrap_err();
    }

    /// One request through `service`, answered with `answer` by the mock.
    async fn exchange<S>(
        service: &mut mock::Spawn<S>,
        handle: &mut Handle,
        answer: http::Response<tonic::body::Body>,
    ) where
        S: Service<http::Request<()>, Response = http::Response<tonic::body::Body>>,
        S::Error: std::fmt::Debug,
    {
        let response = service.call(http::Request::new(()));
        handle.next_request().await.unwrap().1.send_response(answer);
        response.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures_and_readmits_after_the_backoff() {
        let (service, mut handle) =
            mock::pair::<http::Request<()>, http::Response<tonic::body::Body>>();
        let ejected = Arc::new(AtomicU64::new(0));
        let counter = ejected.clone();
        let mut service = mock::Spawn::new(Ejectable::new(
            service,
            policy(),
            Arc::new(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        ));
        handle.allow(100);

        for _ in 0..3 {
            assert_ready_ok!(service.poll_ready());
            fail(&mut service, &mut handle).await;
        }
        assert_eq!(ejected.load(Ordering::SeqCst), 1);
        assert_pending!(service.poll_ready());

        tokio::time::advance(Duration::from_millis(1300)).await;
        assert_ready_ok!(service.poll_ready());

        // On probation: one more failure ejects again, for longer.
        fail(&mut service, &mut handle).await;
        assert_eq!(service.get_ref().ejections(), 2);
        assert_pending!(service.poll_ready());
        tokio::time::advance(Duration::from_millis(1300)).await;
        assert_pending!(
            service.poll_ready(),
            "the second ejection lasts about twice as long"
        );
        tokio::time::advance(Duration::from_millis(1300)).await;
        assert_ready_ok!(service.poll_ready());

        // A success restores it: three more failures are needed again.
        exchange(&mut service, &mut handle, ok()).await;
        for _ in 0..2 {
            assert_ready_ok!(service.poll_ready());
            fail(&mut service, &mut handle).await;
        }
        assert_ready_ok!(service.poll_ready());
        assert_eq!(service.get_ref().ejections(), 2);
    }

    #[derive(Clone)]
    struct Fixed<S>(S);
    impl<S: Service<R>, R> Service<R> for Fixed<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }
        fn call(&mut self, request: R) -> S::Future {
            self.0.call(request)
        }
    }
    impl<S> Load for Fixed<S> {
        type Metric = u32;
        fn load(&self) -> u32 {
            7
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_endpoint_loses_every_load_comparison_until_it_succeeds() {
        let (service, mut handle) =
            mock::pair::<http::Request<()>, http::Response<tonic::body::Body>>();
        let mut service =
            mock::Spawn::new(Ejectable::new(Fixed(service), policy(), Arc::new(|_| {})));
        handle.allow(100);
        assert_eq!(service.get_ref().load(), (0, 7));
        assert_ready_ok!(service.poll_ready());
        exchange(&mut service, &mut handle, unavailable()).await;
        assert_eq!(service.get_ref().load(), (1, 7));
        assert!(
            service.get_ref().load() > (0, 1_000_000),
            "failing outranks any latency"
        );
        assert_ready_ok!(service.poll_ready());
        exchange(&mut service, &mut handle, ok()).await;
        assert_eq!(service.get_ref().load(), (0, 7));
    }

    /// Hardening finding 1: a server's answers — any status, UNAVAILABLE
    /// and INTERNAL included — never eject it (one hostile request could
    /// otherwise take a healthy endpoint out).
    #[tokio::test(start_paused = true)]
    async fn no_answer_of_a_server_counts_as_a_failure() {
        let (service, mut handle) =
            mock::pair::<http::Request<()>, http::Response<tonic::body::Body>>();
        let mut service = mock::Spawn::new(Ejectable::new(service, policy(), Arc::new(|_| {})));
        handle.allow(100);
        for answer in [
            tonic::Status::failed_precondition("business rule"),
            tonic::Status::unavailable("the database is busy"),
            tonic::Status::internal("a bug"),
            tonic::Status::resource_exhausted("too much"),
        ] {
            for _ in 0..5 {
                assert_ready_ok!(service.poll_ready());
                exchange(&mut service, &mut handle, answer.clone().into_http()).await;
            }
        }
        assert_ready_ok!(service.poll_ready());
        assert_eq!(service.get_ref().ejections(), 0);
        // A transport failure after them still counts from one.
        for _ in 0..2 {
            assert_ready_ok!(service.poll_ready());
            fail(&mut service, &mut handle).await;
        }
        assert_ready_ok!(service.poll_ready());
        assert_eq!(service.get_ref().ejections(), 0);
    }
}
