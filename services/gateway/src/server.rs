//! The gateway's port: HTTP/1.1 and HTTP/2 on one socket (hyper-util's
//! auto builder; with TLS, ALPN offers `h2` and `http/1.1`), plaintext only
//! where allowed (`mesh up`, loopback). Slow or greedy clients are bounded:
//! a header read timeout, header size and count limits, a cap on open
//! connections and on concurrent HTTP/2 streams, a TLS handshake timeout.
//! On stop: no new connections, every open one closed gracefully (GOAWAY,
//! or `Connection: close`) once its requests finish, within a bound.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::{exchange::Gateway, tls::Tls};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A client must send its request headers within this.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Most open connections; more are closed at once.
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
    /// How long in-flight requests may run after the stop.
    pub shutdown_grace: Duration,
}

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `gateway` on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    settings: ServerSettings,
    tls: Option<Tls>,
    stop: impl std::future::Future<Output = ()>,
) {
    let builder = Arc::new(builder(&settings));
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (socket, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = settings.max_connections, "too many open connections: closing a new one");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let service = TowerToHyperService::new(gateway.connection(peer));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(&builder, watcher, socket, service, peer).await,
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(socket))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(&builder, watcher, stream, service, peer).await
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?settings.shutdown_grace, "connections still open after the grace period: closing them");
    }
}

async fn serve_connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: IO,
    service: TowerToHyperService<crate::app::ConnectionService>,
    peer: SocketAddr,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

fn builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .max_headers(settings.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(settings.max_streams)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}
