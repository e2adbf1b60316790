//! The per-connection outer layer of the mesh port: puts the connection's
//! facts (peer address, verified caller identity) in each request's
//! extensions, and answers PERMISSION_DENIED once the connection's caller is
//! no longer authorized (between a revocation and the connection's close), or
//! UNAUTHENTICATED to a plaintext caller of an mTLS port.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::future::{BoxFuture, FutureExt};
use tonic::{body::Body, transport::server::TcpConnectInfo, Code, Status};
use tower::Service;

use crate::connect::PeerIdentity;

/// Set once a connection's caller is refused: the status every request gets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Denial(Arc<Mutex<Option<(Code, String)>>>);

impl Denial {
    /// Answers PERMISSION_DENIED with `message` from now on.
    pub(crate) fn deny(&self, message: String) {
        self.refuse(Code::PermissionDenied, message);
    }

    /// Answers `code` with `message` from now on.
    pub(crate) fn refuse(&self, code: Code, message: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((code, message));
    }

    fn status(&self) -> Option<Status> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(|(code, message)| Status::new(*code, message.clone()))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ConnectionGuard<S> {
    inner: S,
    connect_info: TcpConnectInfo,
    peer: Option<PeerIdentity>,
    denial: Denial,
}

impl<S> ConnectionGuard<S> {
    pub(crate) fn new(
        inner: S,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
        peer: Option<PeerIdentity>,
        denial: Denial,
    ) -> Self {
        Self {
            inner,
            connect_info: TcpConnectInfo {
                local_addr: local,
                remote_addr: remote,
            },
            peer,
            denial,
        }
    }
}

impl<S, B> Service<http::Request<B>> for ConnectionGuard<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(status) = self.denial.status() {
            let response = status.into_http();
            return futures::future::ready(Ok(response)).boxed();
        }
        request.extensions_mut().insert(self.connect_info.clone());
        if let Some(peer) = &self.peer {
            request.extensions_mut().insert(peer.clone());
        }
        self.inner.call(request).boxed()
    }
}
