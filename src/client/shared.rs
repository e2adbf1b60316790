//! [`SharedBalancer`]: one chain target's balancer, shared by every call
//! routed to it **without a queue** (ADR 0021). A call locks the balancer,
//! asks it for readiness and sends the request from its own task; only when
//! no endpoint is ready does it park, woken by the balancer like a
//! `tower::buffer::Buffer` worker would be — but with no cross-task handoff
//! of each request (one fewer queue hop than a `Buffer`).
//!
//! The balancer is always polled with one waker of its own that wakes every
//! parked call: a `tower` service keeps only the last waker it was given, so
//! passing each caller's own waker would strand all but the last one.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Wake, Waker},
};

use tower::{BoxError, Service};

/// One balancer shared by many callers (cloning shares it).
pub(crate) struct SharedBalancer<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for SharedBalancer<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<S> {
    service: Mutex<S>,
    parked: Arc<Parked>,
    /// `parked` as a waker, made once.
    wake_parked: Waker,
}

/// The wakers of calls waiting for the balancer to become ready.
#[derive(Default)]
struct Parked {
    wakers: Mutex<Vec<Waker>>,
}

impl Parked {
    fn wakers(&self) -> MutexGuard<'_, Vec<Waker>> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn park(&self, waker: &Waker) {
        let mut wakers = self.wakers();
        if !wakers.iter().any(|parked| parked.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    fn unpark(&self, waker: &Waker) {
        self.wakers().retain(|parked| !parked.will_wake(waker));
    }
}

impl Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = std::mem::take(&mut *self.wakers());
        for waker in wakers {
            waker.wake();
        }
    }
}

impl<S> SharedBalancer<S> {
    /// Shares `service`.
    pub(crate) fn new(service: S) -> Self {
        let parked = Arc::new(Parked::default());
        Self {
            shared: Arc::new(Shared {
                service: Mutex::new(service),
                wake_parked: Waker::from(parked.clone()),
                parked,
            }),
        }
    }

    /// Sends `request` through the balancer as soon as it is ready.
    pub(crate) fn dispatch<Request>(&self, request: Request) -> Dispatched<S, Request>
    where
        S: Service<Request>,
    {
        Dispatched {
            state: State::Waiting {
                shared: self.shared.clone(),
                request: Some(request),
                parked: false,
            },
        }
    }
}

impl<S> Shared<S> {
    /// Polls the balancer's readiness under the lock and sends `request`
    /// when it is ready; parks `cx`'s waker when it is not.
    fn poll_call<Request>(
        &self,
        cx: &mut Context<'_>,
        request: &mut Option<Request>,
        parked: &mut bool,
    ) -> Poll<Result<S::Future, BoxError>>
    where
        S: Service<Request>,
        S::Error: Into<BoxError>,
    {
        let mut service = self.service.lock().unwrap_or_else(|p| p.into_inner());
        let mut own = Context::from_waker(&self.wake_parked);
        let mut ready = service.poll_ready(&mut own);
        if ready.is_pending() {
            // Park, then look again: a wake between the first look and the
            // parking (which takes every parked waker) would otherwise be
            // lost. Every wake empties the list, so a woken call parks anew.
            self.parked.park(cx.waker());
            *parked = true;
            ready = service.poll_ready(&mut own);
        }
        match ready {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                if std::mem::take(parked) {
                    self.parked.unpark(cx.waker());
                }
                let result = result.map_err(Into::into);
                Poll::Ready(result.and_then(|()| {
                    let request = request.take().ok_or("internal: a request sent twice")?;
                    Ok(service.call(request))
                }))
            }
        }
    }
}

/// A request on its way through a [`SharedBalancer`]: waiting for the
/// balancer, then the chosen endpoint's answer.
pub(crate) struct Dispatched<S: Service<Request>, Request> {
    state: State<S, Request>,
}

enum State<S: Service<Request>, Request> {
    Waiting {
        shared: Arc<Shared<S>>,
        request: Option<Request>,
        parked: bool,
    },
    Sent(S::Future),
    Done,
}

impl<S, Request> Future for Dispatched<S, Request>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    S::Future: Unpin,
    Request: Unpin,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Waiting {
                    shared,
                    request,
                    parked,
                } => match std::task::ready!(shared.poll_call(cx, request, parked)) {
                    Ok(future) => this.state = State::Sent(future),
                    Err(error) => {
                        this.state = State::Done;
                        return Poll::Ready(Err(error));
                    }
                },
                State::Sent(future) => {
                    let result = std::task::ready!(Pin::new(future).poll(cx));
                    this.state = State::Done;
                    return Poll::Ready(result.map_err(Into::into));
                }
                State::Done => return Poll::Ready(Err("internal: polled after completion".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::{assert_pending, assert_ready};
    use tower_test::mock;

    type Mock = mock::Mock<&'static str, &'static str>;

    /// Boxes the mock's future (the balancer's future is boxed too).
    struct Boxed(Mock);

    impl Service<&'static str> for Boxed {
        type Response = &'static str;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, request: &'static str) -> Self::Future {
            Box::pin(self.0.call(request))
        }
    }

    #[tokio::test]
    async fn every_parked_call_is_woken_and_sent_when_the_balancer_is_ready() {
        let (service, mut handle) = mock::pair::<&'static str, &'static str>();
        handle.allow(0);
        let shared = SharedBalancer::new(Boxed(service));
        let mut first = tokio_test::task::spawn(shared.dispatch("first"));
        let mut second = tokio_test::task::spawn(shared.dispatch("second"));
        assert_pending!(first.poll());
        assert_pending!(second.poll());

        handle.allow(2);
        // Both parked callers are woken, not only the one that polled last.
        assert!(first.is_woken());
        assert!(second.is_woken());
        assert_pending!(first.poll());
        assert_pending!(second.poll());
        let mut sent = Vec::new();
        for _ in 0..2 {
            let (request, respond) = handle.next_request().await.unwrap();
            sent.push(request);
            respond.send_response("ok");
        }
        sent.sort();
        assert_eq!(sent, ["first", "second"]);
        assert_eq!(assert_ready!(first.poll()).unwrap(), "ok");
        assert_eq!(assert_ready!(second.poll()).unwrap(), "ok");
        assert!(shared.shared.parked.wakers().is_empty());
    }

    #[tokio::test]
    async fn a_woken_call_that_finds_no_room_parks_again_and_is_woken_next_time() {
        let (service, mut handle) = mock::pair::<&'static str, &'static str>();
        handle.allow(0);
        let shared = SharedBalancer::new(Boxed(service));
        let mut first = tokio_test::task::spawn(shared.dispatch("first"));
        let mut second = tokio_test::task::spawn(shared.dispatch("second"));
        assert_pending!(first.poll());
        assert_pending!(second.poll());

        handle.allow(1);
        assert!(first.is_woken() && second.is_woken());
        assert_pending!(first.poll()); // sent: waits for its answer
        assert_pending!(second.poll()); // no room left: parked again
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!(request, "first");
        respond.send_response("one");
        assert_eq!(assert_ready!(first.poll()).unwrap(), "one");

        handle.allow(1);
        assert!(
            second.is_woken(),
            "the call that lost the race was stranded"
        );
        assert_pending!(second.poll());
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!(request, "second");
        respond.send_response("two");
        assert_eq!(assert_ready!(second.poll()).unwrap(), "two");
    }

    #[tokio::test]
    async fn a_ready_balancer_sends_at_once_without_parking() {
        let (service, mut handle) = mock::pair::<&'static str, &'static str>();
        handle.allow(1);
        let shared = SharedBalancer::new(Boxed(service));
        let mut call = tokio_test::task::spawn(shared.dispatch("now"));
        assert_pending!(call.poll());
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!(request, "now");
        assert!(shared.shared.parked.wakers().is_empty());
        respond.send_response("done");
        assert_eq!(assert_ready!(call.poll()).unwrap(), "done");
    }

    #[tokio::test]
    async fn a_readiness_error_fails_that_call_and_not_the_next() {
        let (service, mut handle) = mock::pair::<&'static str, &'static str>();
        handle.send_error("no endpoint");
        let shared = SharedBalancer::new(Boxed(service));
        let error = shared.dispatch("a").await.unwrap_err();
        assert!(error.to_string().contains("no endpoint"), "{error}");

        handle.allow(1);
        let mut next = tokio_test::task::spawn(shared.dispatch("b"));
        assert_pending!(next.poll());
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!(request, "b");
        respond.send_response("fine");
        assert_eq!(assert_ready!(next.poll()).unwrap(), "fine");
    }
}
