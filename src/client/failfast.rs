//! Fail fast: while the balancer has had no ready endpoint for longer than a
//! period, requests fail at once with "no healthy instance of <service>"
//! instead of queueing behind it forever. It recovers as soon as an endpoint
//! is ready again.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};
use tower::{BoxError, Service};

use super::error::NoHealthyEndpoint;

pub(crate) struct FailFast<S> {
    inner: S,
    service: String,
    after: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
    failing: bool,
    inner_ready: bool,
}

impl<S> FailFast<S> {
    pub(crate) fn new(inner: S, service: &str, after: Duration) -> Self {
        Self {
            inner,
            service: service.to_owned(),
            after,
            waiting: None,
            failing: false,
            inner_ready: false,
        }
    }
}

impl<S, Request> Service<Request> for FailFast<S>
where
    S: Service<Request, Error = BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.waiting = None;
                self.failing = false;
                self.inner_ready = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending if self.failing => {
                self.inner_ready = false;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let after = self.after;
                let waiting = self.waiting.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + after))
                });
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.failing = true;
                        self.inner_ready = false;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if std::mem::take(&mut self.inner_ready) {
            Box::pin(self.inner.call(request))
        } else {
            let error = NoHealthyEndpoint {
                service: self.service.clone(),
            };
            Box::pin(async move { Err(error.into()) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::{assert_pending, assert_ready_ok};
    use tower_test::mock;

    #[tokio::test(start_paused = true)]
    async fn fails_fast_after_the_period_and_recovers_when_ready() {
        let (service, mut handle) = mock::pair::<(), ()>();
        let mut service =
            mock::Spawn::new(FailFast::new(service, "payments", Duration::from_secs(3)));
        handle.allow(0);
        assert_pending!(service.poll_ready());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_pending!(service.poll_ready());
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert_ready_ok!(service.poll_ready());
        let error = service.call(()).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no healthy instance of payments"),
            "{error}"
        );
        // Still failing fast: no new wait.
        assert_ready_ok!(service.poll_ready());
        assert!(service.call(()).await.is_err());

        handle.allow(1);
        assert_ready_ok!(service.poll_ready());
        let response = service.call(());
        handle.next_request().await.unwrap().1.send_response(());
        response.await.unwrap();
        // Not ready again: the wait starts over.
        assert_pending!(service.poll_ready());
    }
}
