//! The mesh port: one accept loop that serves each connection itself with
//! hyper's HTTP/2 server over tonic's routes, so that every connection can
//! be authorized, re-checked and closed on its own.
//!
//! With mTLS (`--mtls=required`), per accepted socket: TCP_NODELAY, a place
//! among the pending handshakes (at most `--max-pending-handshakes`; the
//! oldest gives way, see [`pending`]), and from the accept at most
//! `--handshake-timeout` — the first byte included — to complete the TLS 1.3
//! handshake: refused at once when our leaf is missing or expired, client
//! certificate required and verified against the current Connect roots,
//! the caller's SPIFFE ID from its URI SAN (same trust domain as ours).
//! Then the intentions ([`Authorizer::admit`]) and HTTP/2 with the caller's
//! identity in every request's extensions. The connection is closed with
//! GOAWAY (in-flight requests finish) when the caller's authorization ends
//! — revoked, or unconfirmed for longer than `--authz-max-stale`; its
//! requests are answered PERMISSION_DENIED from then on — and when the
//! caller's certificate expires, so that it reconnects with its renewed one.
//! A caller denied at once gets one readable PERMISSION_DENIED answer before
//! the close. A plaintext client of an mTLS port gets UNAUTHENTICATED
//! answers saying what to do, then the close. Every refusal is counted in
//! `mesh_connections_refused_total{reason}`. Without mTLS (`--mtls=off`):
//! TCP_NODELAY and HTTP/2 in the clear.

use std::{
    convert::Infallible,
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
    time::Instant,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tonic::{body::Body, Code};
use tower::Service;

pub(crate) use self::pending::Handshakes;
use self::{
    http2::{close_after, serve_http2, Live},
    metrics::{refused, Refused},
    pending::PendingSlot,
};
use super::{
    authz::Authorizer,
    guard::{ConnectionGuard, Denial},
};
use crate::connect::{inspect, Identity, PeerCertificate, PeerIdentity};

mod http2;
mod metrics;
mod pending;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long a connection denied at once stays open for its first answer.
const DENIED_GRACE: Duration = Duration::from_secs(2);

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
        handshakes: Handshakes,
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

/// An accepted socket and its addresses.
struct Accepted {
    socket: TcpStream,
    local: Option<SocketAddr>,
    remote: SocketAddr,
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
                    let accepted = Accepted { local: socket.local_addr().ok(), socket, remote };
                    let (service, stopping) = (service.clone(), stopping.clone());
                    match &admission {
                        Admission::Plaintext => {
                            connections.spawn(plaintext(accepted, service, stopping));
                        }
                        Admission::Mtls { identity, authorizer, handshakes } => {
                            // Taken here, in accept order: the cap holds at once.
                            let slot = handshakes.enter();
                            let deadline = Instant::now() + handshakes.timeout();
                            connections.spawn(mtls(
                                accepted,
                                Unauthenticated { identity: identity.clone(), slot, deadline },
                                authorizer.clone(),
                                service,
                                stopping,
                            ));
                        }
                    }
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

/// `--mtls=off`: HTTP/2 in the clear.
async fn plaintext<S>(accepted: Accepted, service: S, stopping: watch::Receiver<bool>)
where
    S: MeshPortService,
{
    let guarded = ConnectionGuard::new(
        service,
        accepted.local,
        Some(accepted.remote),
        None,
        Denial::default(),
    );
    serve_http2(TokioIo::new(accepted.socket), guarded, stopping, None).await;
}

/// A connection until it has authenticated: the identity it is checked
/// against, its place among the pending handshakes, and its deadline.
struct Unauthenticated {
    identity: Identity,
    slot: PendingSlot,
    deadline: Instant,
}

/// How the first bytes of a connection ended.
enum FirstBytes {
    /// A completed TLS handshake with a Connect identity of our trust domain.
    Authenticated(Box<TlsStream<TcpStream>>, PeerCertificate),
    /// Not a TLS record: a plaintext client.
    Plaintext(TcpStream),
    /// Refused (logged).
    Refused(Refused),
}

/// One mTLS connection: handshake (bounded, capped), intentions, HTTP/2.
async fn mtls<S>(
    accepted: Accepted,
    mut pending: Unauthenticated,
    authorizer: Authorizer,
    service: S,
    stopping: watch::Receiver<bool>,
) where
    S: MeshPortService,
{
    let Accepted {
        socket,
        local,
        remote,
    } = accepted;
    let first_bytes = tokio::select! {
        () = pending.slot.evicted() => {
            tracing::debug!(%remote, "dropping an unauthenticated connection: too many pending handshakes");
            FirstBytes::Refused(Refused::TooManyPending)
        }
        outcome = tokio::time::timeout_at(pending.deadline, authenticate(socket, remote, &pending.identity)) => {
            outcome.unwrap_or_else(|_| {
                tracing::info!(%remote, "TLS handshake timed out (--handshake-timeout)");
                FirstBytes::Refused(Refused::HandshakeTimeout)
            })
        }
    };
    let (stream, peer) = match first_bytes {
        FirstBytes::Authenticated(stream, peer) => (stream, peer),
        FirstBytes::Plaintext(socket) => {
            refused(Refused::Plaintext);
            // Still unauthenticated: it keeps its place until the answer is out.
            tokio::select! {
                () = pending.slot.evicted() => {}
                () = refuse_plaintext(socket, local, remote, service, stopping) => {}
            }
            return;
        }
        FirstBytes::Refused(reason) => {
            refused(reason);
            return;
        }
    };
    drop(pending);
    let denial = Denial::default();
    let identity = PeerIdentity {
        identity: peer.identity.clone(),
        serial: peer.serial.clone(),
    };
    let guarded =
        ConnectionGuard::new(service, local, Some(remote), Some(identity), denial.clone());
    let io = TokioIo::new(*stream);
    match authorizer.admit(&peer).await {
        Ok(authorization) => {
            tracing::debug!(%remote, caller = %peer.identity, serial = %peer.serial, "connection authorized");
            let live = Live {
                authorization,
                denial,
                caller: peer.identity.to_string(),
                expires: instant_of(peer.not_after),
            };
            serve_http2(io, guarded, stopping, Some(live)).await;
        }
        Err(refusal) => {
            refused(Refused::NotAuthorized);
            tracing::warn!(%remote, caller = %peer.identity, target = authorizer.target(), reason = refusal.message(), "connection refused");
            denial.deny(refusal.message().to_owned());
            // Answer what arrives right after the handshake, then close.
            serve_http2(io, guarded, close_after(stopping, DENIED_GRACE), None).await;
        }
    }
}

/// The tokio instant of a wall-clock time (now when it has passed).
fn instant_of(time: SystemTime) -> Instant {
    let left = time
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}

/// Reads the client's first byte, and unless it is plaintext, completes the
/// TLS handshake and reads the caller's Connect identity.
async fn authenticate(socket: TcpStream, remote: SocketAddr, identity: &Identity) -> FirstBytes {
    let mut first = [0u8; 1];
    match socket.peek(&mut first).await {
        Ok(1) if first[0] != TLS_HANDSHAKE_RECORD => return FirstBytes::Plaintext(socket),
        // A TLS record, or closed/failed: the TLS path logs and drops it.
        _ => {}
    }
    match handshake(socket, remote, identity).await {
        Ok((stream, peer)) => FirstBytes::Authenticated(Box::new(stream), peer),
        Err(reason) => FirstBytes::Refused(reason),
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

/// The TLS handshake and the caller's identity, or why it is refused (logged).
async fn handshake(
    socket: TcpStream,
    remote: SocketAddr,
    identity: &Identity,
) -> Result<(TlsStream<TcpStream>, PeerCertificate), Refused> {
    let config = identity.server_config().map_err(|error| {
        tracing::error!(%remote, %error, "refusing a connection: no usable Connect certificate");
        Refused::NoServerCertificate
    })?;
    let stream = TlsAcceptor::from(config)
        .accept(socket)
        .await
        .map_err(|error| {
            tracing::info!(%remote, %error, "TLS handshake refused (a Connect client certificate is required)");
            Refused::TlsHandshake
        })?;
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
            return Err(Refused::NoClientIdentity);
        }
        None => {
            tracing::warn!(%remote, "refusing a connection without a client certificate");
            return Err(Refused::NoClientIdentity);
        }
    };
    let ours = identity
        .current()
        .map(|current| current.credentials.trust_domain.clone());
    if ours.as_deref() != Some(peer.identity.trust_domain.as_str()) {
        tracing::warn!(%remote, caller = %peer.identity, "refusing a caller from another trust domain");
        return Err(Refused::ForeignTrustDomain);
    }
    if peer.not_after <= SystemTime::now() {
        tracing::warn!(%remote, caller = %peer.identity, "refusing an expired client certificate");
        return Err(Refused::ExpiredCertificate);
    }
    Ok((stream, peer))
}

#[cfg(test)]
mod tests;
