//! The mesh port: one accept loop that serves each connection itself with
//! hyper's HTTP/2 server over tonic's routes, so that every connection can
//! be authorized, re-checked and closed on its own.
//!
//! With mTLS (`--mtls=required`), per accepted socket: TCP_NODELAY, refuse at
//! once when our leaf is missing or expired, TLS 1.3 handshake (client
//! certificate required and verified against the current Connect roots),
//! the caller's SPIFFE ID from its URI SAN (same trust domain as ours),
//! `POST /v1/agent/connect/authorize`, then HTTP/2 with the caller's identity
//! in every request's extensions and a re-check every period: once the
//! intentions deny the caller, its requests are answered PERMISSION_DENIED and
//! the connection is closed with GOAWAY. A caller denied at once gets one
//! readable PERMISSION_DENIED answer before the close.
//! A plaintext client of an mTLS port gets UNAUTHENTICATED answers saying
//! what to do, then the close. Without mTLS (`--mtls=off`): TCP_NODELAY and
//! HTTP/2 in the clear.

use std::{
    convert::Infallible,
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use hyper::server::conn::http2;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;
use tonic::{body::Body, Code};
use tower::Service;

use super::{
    authz::Authorizer,
    guard::{ConnectionGuard, Denial},
};
use crate::connect::{inspect, Identity, PeerCertificate, PeerIdentity};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection denied at once stays open for its first answer.
const DENIED_GRACE: Duration = Duration::from_secs(2);
/// HTTP/2 keepalive pings, as the tonic server had.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How the mesh port admits connections.
// One value per server, cloned per connection only as cheap handles: its size
// does not matter, and boxing the identity would add an indirection for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Admission {
    /// Plaintext, anyone (`--mtls=off`).
    Plaintext,
    /// Connect mTLS and intentions.
    Mtls {
        identity: Identity,
        authorizer: Authorizer,
    },
}

/// What the mesh port serves on every connection: tonic's routes behind the
/// bootstrap's layers, as a cloneable service hyper can drive.
pub(crate) trait MeshPortService:
    Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> MeshPortService for S where
    S: Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `service` on `listener` until `shutdown` resolves; then stops
/// accepting, closes every connection gracefully (GOAWAY) and waits for
/// in-flight requests.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    admission: Admission,
    service: S,
    shutdown: impl std::future::Future<Output = ()>,
) where
    S: MeshPortService,
{
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, remote)) => {
                    if let Err(error) = socket.set_nodelay(true) {
                        tracing::debug!(%remote, %error, "cannot set TCP_NODELAY");
                    }
                    let local = socket.local_addr().ok();
                    connections.spawn(connection(
                        socket,
                        local,
                        remote,
                        admission.clone(),
                        service.clone(),
                        stopping.clone(),
                    ));
                }
                Err(error) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

async fn connection<S>(
    socket: TcpStream,
    local: Option<SocketAddr>,
    remote: SocketAddr,
    admission: Admission,
    service: S,
    stopping: watch::Receiver<bool>,
) where
    S: MeshPortService,
{
    match admission {
        Admission::Plaintext => {
            let guarded =
                ConnectionGuard::new(service, local, Some(remote), None, Denial::default());
            serve_http2(TokioIo::new(socket), guarded, stopping, None).await;
        }
        Admission::Mtls {
            identity,
            authorizer,
        } => {
            if !starts_with_tls(&socket).await {
                refuse_plaintext(socket, local, remote, service, stopping).await;
                return;
            }
            let Some((stream, peer)) = handshake(socket, remote, &identity).await else {
                return;
            };
            let decision = authorizer.admit(&peer).await;
            let denial = Denial::default();
            let recheck = if decision.allowed {
                tracing::debug!(%remote, caller = %peer.identity, serial = %peer.serial, "connection authorized");
                Some(Recheck {
                    authorizer: authorizer.clone(),
                    peer: peer.clone(),
                    denial: denial.clone(),
                })
            } else {
                tracing::warn!(%remote, caller = %peer.identity, target = authorizer.target(), reason = %decision.reason, "connection denied by intentions");
                denial.deny(denied_message(&peer, authorizer.target(), &decision.reason));
                None
            };
            let identity = PeerIdentity {
                identity: peer.identity.clone(),
                serial: peer.serial.clone(),
            };
            let guarded =
                ConnectionGuard::new(service, local, Some(remote), Some(identity), denial);
            let stopping = if recheck.is_none() {
                // Denied: answer what arrives right after the handshake, then close.
                close_after(stopping, DENIED_GRACE)
            } else {
                stopping
            };
            serve_http2(TokioIo::new(stream), guarded, stopping, recheck).await;
        }
    }
}

/// Whether the client's first byte opens a TLS handshake record (0x16).
async fn starts_with_tls(socket: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == TLS_HANDSHAKE_RECORD,
        // Closed, failed or silent: the TLS path logs and drops it.
        _ => true,
    }
}

/// A plaintext HTTP/2 client on an mTLS port: every request is answered
/// UNAUTHENTICATED with what to do instead, then the connection closes.
async fn refuse_plaintext<S>(
    socket: TcpStream,
    local: Option<SocketAddr>,
    remote: SocketAddr,
    service: S,
    stopping: watch::Receiver<bool>,
) where
    S: MeshPortService,
{
    tracing::info!(%remote, "refusing a plaintext client: this port requires Connect mTLS");
    let denial = Denial::default();
    denial.refuse(
        Code::Unauthenticated,
        "this port requires Consul Connect mTLS: present a Connect client certificate \
         (e.g. `mesh cert operator --out DIR`, then grpcurl -cacert DIR/ca.pem -cert DIR/cert.pem \
         -key DIR/key.pem -insecure)"
            .to_owned(),
    );
    let guarded = ConnectionGuard::new(service, local, Some(remote), None, denial);
    serve_http2(
        TokioIo::new(socket),
        guarded,
        close_after(stopping, DENIED_GRACE),
        None,
    )
    .await;
}

fn denied_message(peer: &PeerCertificate, target: &str, reason: &str) -> String {
    format!(
        "{} may not call {target}: denied by Consul intentions ({reason})",
        peer.identity.service
    )
}

/// The TLS handshake and the caller's identity; `None` (logged) when refused.
async fn handshake(
    socket: TcpStream,
    remote: SocketAddr,
    identity: &Identity,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, PeerCertificate)> {
    let config = match identity.server_config() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%remote, %error, "refusing a connection: no usable Connect certificate");
            return None;
        }
    };
    let stream = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsAcceptor::from(config).accept(socket),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(%remote, %error, "TLS handshake refused (a Connect client certificate is required)");
            return None;
        }
        Err(_) => {
            tracing::info!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| inspect(leaf));
    let peer = match peer {
        Some(Ok(peer)) => peer,
        Some(Err(error)) => {
            tracing::warn!(%remote, %error, "refusing a client certificate without a Connect service identity");
            return None;
        }
        None => {
            tracing::warn!(%remote, "refusing a connection without a client certificate");
            return None;
        }
    };
    let ours = identity
        .current()
        .map(|current| current.credentials.trust_domain.clone());
    if ours.as_deref() != Some(peer.identity.trust_domain.as_str()) {
        tracing::warn!(%remote, caller = %peer.identity, "refusing a caller from another trust domain");
        return None;
    }
    if peer.not_after <= SystemTime::now() {
        tracing::warn!(%remote, caller = %peer.identity, "refusing an expired client certificate");
        return None;
    }
    Some((stream, peer))
}

/// A live connection's periodic authorization.
struct Recheck {
    authorizer: Authorizer,
    peer: PeerCertificate,
    denial: Denial,
}

/// Resolves once `flag` is (or was) true, or its sender is gone.
async fn until_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped at once (it is not `Send`).
    let _ = flag.wait_for(|value| *value).await;
}

/// `stopping`, but also true after `after`.
fn close_after(mut stopping: watch::Receiver<bool>, after: Duration) -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(*stopping.borrow());
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(after) => {}
            () = until_true(&mut stopping) => {}
            () = sender.closed() => return,
        }
        let _ = sender.send(true);
    });
    receiver
}

async fn serve_http2<I, S>(
    io: TokioIo<I>,
    service: S,
    mut stopping: watch::Receiver<bool>,
    recheck: Option<Recheck>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: MeshPortService,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let connection = builder.serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(connection);
    let period = recheck
        .as_ref()
        .map(|recheck| recheck.authorizer.recheck())
        .unwrap_or(Duration::from_secs(3600));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = until_true(&mut stopping), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = ticks.tick(), if !closing && recheck.is_some() => {
                let Some(recheck) = &recheck else { continue };
                let decision = recheck.authorizer.recheck_live(&recheck.peer).await;
                if !decision.allowed {
                    tracing::warn!(
                        caller = %recheck.peer.identity,
                        target = recheck.authorizer.target(),
                        reason = %decision.reason,
                        "intention revoked: closing the live connection (GOAWAY)"
                    );
                    recheck.denial.deny(denied_message(&recheck.peer, recheck.authorizer.target(), &decision.reason));
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
