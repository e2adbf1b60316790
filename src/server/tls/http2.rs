//! HTTP/2 on one accepted connection of the mesh port, until the caller
//! leaves or something ends the connection: the server stopping, the
//! caller's authorization ending (revoked, or unconfirmed past
//! `--authz-max-stale`: its requests are answered PERMISSION_DENIED from
//! then on) or its certificate expiring. Each ends it gracefully: GOAWAY,
//! in-flight requests finish.

use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
    time::Instant,
};

use super::MeshPortService;
use crate::server::{
    authz::{LiveAuthorization, Refusal},
    guard::Denial,
};

/// HTTP/2 keepalive pings, as the tonic server had.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// An authorized connection: what ends it before the caller does.
pub(super) struct Live {
    pub(super) authorization: LiveAuthorization,
    /// Set when the authorization ends, for requests racing the GOAWAY.
    pub(super) denial: Denial,
    pub(super) caller: String,
    /// When the caller's certificate expires.
    pub(super) expires: Instant,
}

/// Resolves once `flag` is (or was) true, or its sender is gone.
async fn until_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped at once (it is not `Send`).
    let _ = flag.wait_for(|value| *value).await;
}

/// `stopping`, but also true after `after`.
pub(super) fn close_after(
    mut stopping: watch::Receiver<bool>,
    after: Duration,
) -> watch::Receiver<bool> {
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

/// Why a live connection is being closed.
enum Closing {
    Stopping,
    Unauthorized(Refusal),
    CertificateExpired,
}

/// Serves HTTP/2 on `io` until the connection ends; a `live` (authorized)
/// connection also ends when its authorization or its caller's certificate
/// does (see the module docs).
pub(super) async fn serve_http2<I, S>(
    io: TokioIo<I>,
    service: S,
    mut stopping: watch::Receiver<bool>,
    mut live: Option<Live>,
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
    let is_live = live.is_some();
    let expires = live.as_ref().map(|live| live.expires);
    let mut closing = false;
    loop {
        // The authorization's and the certificate's ends, when this connection has them.
        let revoked = async {
            match live.as_mut() {
                Some(live) => live.authorization.revoked().await,
                None => std::future::pending().await,
            }
        };
        let expired = async {
            match expires {
                Some(expires) => tokio::time::sleep_until(expires).await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = until_true(&mut stopping), if !closing => Closing::Stopping,
            refusal = revoked, if !closing && is_live => Closing::Unauthorized(refusal),
            () = expired, if !closing && is_live => Closing::CertificateExpired,
        };
        closing = true;
        connection.as_mut().graceful_shutdown();
        let Some(live) = &live else { continue };
        match why {
            Closing::Stopping => {}
            Closing::Unauthorized(refusal) => {
                let what = match refusal {
                    Refusal::Stale(_) => "authorization too stale (--authz-max-stale)",
                    Refusal::Denied(_) | Refusal::Unconfirmed(_) => "intention revoked",
                };
                tracing::warn!(caller = %live.caller, reason = refusal.message(), "{what}: closing the live connection (GOAWAY)");
                live.denial.deny(refusal.message().to_owned());
            }
            Closing::CertificateExpired => {
                tracing::info!(caller = %live.caller, "the caller's certificate expired: closing the live connection (GOAWAY) so that it reconnects with its renewed one");
            }
        }
    }
}
