//! One endpoint's transport: a lazily dialled HTTP/2 connection that each
//! call drives from its own task.
//!
//! The request is handed to the HTTP/2 connection's shared state directly by
//! the caller (`h2`'s `SendRequest`), and the caller's task is woken by the
//! connection's task when the answer arrives. A tonic `Channel` puts two
//! more tasks on that path (its `Buffer` worker and hyper's dispatch task,
//! which also spawns a task per response), each one a hand-off and often a
//! wake-up of a sleeping thread (ADR 0022).
//!
//! What the `Channel` gave that this keeps:
//! - **lazy connect, reconnect**: the first readiness check dials; a
//!   connection that ends (peer closed it, GOAWAY, a keep-alive PING
//!   unanswered) is dialled again at the next check. A failed dial makes the
//!   endpoint ready once, and the call it takes fails with [`NotConnected`]
//!   (never an error from `poll_ready`, which would make the balancer drop
//!   the endpoint for good);
//! - **connect timeout, `TCP_NODELAY`, Connect mTLS** ([`connection`]);
//! - **keep-alive PINGs** while calls are open;
//! - **the response header-list limit** the hardening work set
//!   (`MAX_RESPONSE_HEADER_LIST_BYTES`): a larger answer resets the stream.
//!
//! The request arrives as the bytes the call buffered for replays; they go
//! out as one DATA frame that ends the stream.

mod body;
mod connection;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use tokio::task::JoinHandle;
use tower::{BoxError, Service};

use super::{error::NotConnected, options::ClientOptions};
use body::ResponseBody;
use connection::{connect, CallGuard, Connection, ConnectionSettings};

/// One endpoint's connection (see the module docs).
pub(crate) struct Http2Endpoint {
    address: Arc<str>,
    authority: Authority,
    target: Arc<str>,
    settings: ConnectionSettings,
    state: State,
}

enum State {
    /// No connection: the next readiness check dials.
    Idle,
    /// Dialling, in a task of its own (it goes on whoever polls).
    Connecting(JoinHandle<Result<Connection, NotConnected>>),
    Connected(Connection),
    /// The last dial failed: the next call gets this error.
    Failed(NotConnected),
}

impl Http2Endpoint {
    /// The endpoint at `address` (`host:port`) of the service `target`,
    /// dialled as `options` say; nothing is dialled until it is polled.
    pub(crate) fn new(
        address: &str,
        target: &str,
        options: &ClientOptions,
    ) -> Result<Self, http::uri::InvalidUri> {
        Ok(Self {
            address: address.into(),
            authority: address.parse()?,
            target: target.into(),
            settings: ConnectionSettings::from(options),
            state: State::Idle,
        })
    }

    /// `request` with the absolute URI HTTP/2 needs (`:scheme`,
    /// `:authority`): generated clients send the path alone.
    fn head(&self, parts: http::request::Parts) -> Result<http::Request<()>, BoxError> {
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        let mut head = http::Request::new(());
        *head.method_mut() = parts.method;
        *head.uri_mut() = http::Uri::from_parts(uri)?;
        *head.headers_mut() = parts.headers;
        *head.extensions_mut() = parts.extensions;
        Ok(head)
    }

    fn send(&mut self, request: http::Request<Bytes>) -> ResponseFuture {
        let (parts, body) = request.into_parts();
        let head = match self.head(parts) {
            Ok(head) => head,
            Err(error) => return ResponseFuture::failed(error),
        };
        let State::Connected(connection) = &mut self.state else {
            return ResponseFuture::failed(
                "internal: a call on an endpoint that is not ready".into(),
            );
        };
        let call = connection.calls.enter();
        let (response, mut stream) = match connection.sender.send_request(head, body.is_empty()) {
            Ok(sent) => sent,
            Err(error) if error.is_io() || error.is_go_away() => {
                // The connection ended before this request got a stream:
                // nothing was sent, and the next check dials again.
                self.state = State::Idle;
                return ResponseFuture::failed(Box::new(NotConnected::new(
                    &self.address,
                    &self.target,
                    format!("the connection closed before the request was sent: {error}"),
                    None,
                )));
            }
            Err(error) => return ResponseFuture::failed(error.into()),
        };
        if !body.is_empty() {
            if let Err(error) = stream.send_data(body, true) {
                return ResponseFuture::failed(error.into());
            }
        }
        ResponseFuture {
            state: Answer::Waiting { response, call },
        }
    }
}

impl Drop for Http2Endpoint {
    fn drop(&mut self) {
        if let State::Connecting(dialling) = &self.state {
            dialling.abort();
        }
    }
}

impl Service<http::Request<Bytes>> for Http2Endpoint {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            match &mut self.state {
                State::Failed(_) => return Poll::Ready(Ok(())),
                State::Idle => {
                    self.state = State::Connecting(tokio::spawn(connect(
                        self.address.clone(),
                        self.target.clone(),
                        self.settings.clone(),
                    )));
                }
                State::Connecting(dialling) => {
                    self.state = match ready!(Pin::new(dialling).poll(cx)) {
                        Ok(Ok(connection)) => State::Connected(connection),
                        Ok(Err(not_connected)) => State::Failed(not_connected),
                        Err(failed) => State::Failed(NotConnected::new(
                            &self.address,
                            &self.target,
                            format!("the dialling task failed: {failed}"),
                            None,
                        )),
                    };
                }
                State::Connected(connection) => match connection.sender.poll_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(error)) => {
                        tracing::debug!(endpoint = %self.address, %error, "endpoint connection gone; dialling again");
                        self.state = State::Idle;
                    }
                },
            }
        }
    }

    fn call(&mut self, request: http::Request<Bytes>) -> ResponseFuture {
        match std::mem::replace(&mut self.state, State::Idle) {
            // The failed dial's error goes to this call; the next check dials again.
            State::Failed(not_connected) => ResponseFuture::failed(Box::new(not_connected)),
            state => {
                self.state = state;
                self.send(request)
            }
        }
    }
}

/// The answer of one call: its response head, then a body read from the
/// stream by whoever polls it.
pub(crate) struct ResponseFuture {
    state: Answer,
}

enum Answer {
    Failed(Option<BoxError>),
    Waiting {
        response: h2::client::ResponseFuture,
        call: CallGuard,
    },
}

impl ResponseFuture {
    fn failed(error: BoxError) -> Self {
        Self {
            state: Answer::Failed(Some(error)),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<tonic::body::Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            Answer::Failed(error) => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "internal: a response polled after it was returned".into()))),
            Answer::Waiting { response, .. } => {
                let answered = ready!(Pin::new(response).poll(cx));
                let Answer::Waiting { call, .. } =
                    std::mem::replace(&mut self.state, Answer::Failed(None))
                else {
                    return Poll::Ready(Err("internal: a response lost its call".into()));
                };
                let head = answered?;
                Poll::Ready(Ok(head.map(|stream| {
                    tonic::body::Body::new(ResponseBody::new(stream, call))
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests;
