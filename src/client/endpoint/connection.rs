//! One HTTP/2 connection to an endpoint: dialled (plaintext, or TLS with the
//! Connect identity), handshaken with the client's settings, and driven by a
//! task of its own that also sends the keep-alive PINGs.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::{sleep, Sleep},
};

use super::super::{
    connector::{dial_tcp, dial_tls},
    error::NotConnected,
    options::ClientOptions,
};
use crate::limits::MAX_RESPONSE_HEADER_LIST_BYTES;

/// The window a stream may receive before the caller reads (hyper's client
/// default, which the tonic channel used before).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// The window of the whole connection (hyper's client default).
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Largest frame we accept (the HTTP/2 default).
const MAX_FRAME: u32 = 16 * 1024;
/// Request bytes buffered per stream before the peer opens its window.
const SEND_BUFFER: usize = 1024 * 1024;

/// What a connection needs from the client's options.
#[derive(Clone)]
pub(crate) struct ConnectionSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) identity: Option<crate::connect::Identity>,
}

impl From<&ClientOptions> for ConnectionSettings {
    fn from(options: &ClientOptions) -> Self {
        Self {
            connect_timeout: options.connect_timeout,
            keepalive_interval: options.http2_keepalive_interval,
            keepalive_timeout: options.http2_keepalive_timeout,
            identity: options.identity.clone(),
        }
    }
}

/// A live connection: its request handle, and the count of its open calls.
pub(crate) struct Connection {
    pub(crate) sender: h2::client::SendRequest<Bytes>,
    pub(crate) calls: OpenCalls,
}

/// How many calls a connection carries: from the request sent until its
/// response body is dropped (keep-alive PINGs run only while some are).
#[derive(Clone, Default)]
pub(crate) struct OpenCalls(Arc<AtomicUsize>);

impl OpenCalls {
    /// Counts one call until the guard is dropped.
    pub(crate) fn enter(&self) -> CallGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        CallGuard(self.0.clone())
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// One open call of a connection (see [`OpenCalls`]).
pub(crate) struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Dials `authority` for `target` and starts the connection's task. Within
/// `connect_timeout`; any failure is a [`NotConnected`] (nothing was sent).
pub(crate) async fn connect(
    authority: Arc<str>,
    target: Arc<str>,
    settings: ConnectionSettings,
) -> Result<Connection, NotConnected> {
    let timeout = settings.connect_timeout;
    let dialled = tokio::time::timeout(timeout, async {
        match &settings.identity {
            None => {
                handshake(
                    dial_tcp(&authority, &target).await?,
                    &authority,
                    &target,
                    &settings,
                )
                .await
            }
            Some(identity) => {
                let tls = dial_tls(&authority, &target, identity).await?;
                handshake(tls, &authority, &target, &settings).await
            }
        }
    })
    .await;
    dialled.unwrap_or_else(|_| {
        Err(NotConnected::new(
            &authority,
            &target,
            format!("connect timed out after {timeout:?}"),
            None,
        ))
    })
}

async fn handshake<T>(
    io: T,
    authority: &str,
    target: &str,
    settings: &ConnectionSettings,
) -> Result<Connection, NotConnected>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(SEND_BUFFER)
        // Room for the largest status a mesh server sends (see limits).
        .max_header_list_size(MAX_RESPONSE_HEADER_LIST_BYTES as u32)
        .enable_push(false)
        .handshake::<T, Bytes>(io)
        .await
        .map_err(|error| {
            let reason = format!("HTTP/2 handshake: {error}");
            NotConnected::new(authority, target, reason, error.into_io())
        })?;
    let calls = OpenCalls::default();
    let ping_pong = connection.ping_pong();
    tokio::spawn(Driver {
        connection,
        keepalive: ping_pong.map(|ping_pong| Keepalive {
            ping_pong,
            calls: calls.clone(),
            interval: settings.keepalive_interval,
            timeout: settings.keepalive_timeout,
            timer: Box::pin(sleep(settings.keepalive_interval)),
            awaiting_pong: false,
        }),
        authority: authority.into(),
    });
    Ok(Connection { sender, calls })
}

/// The connection's task: reads and writes its frames until it ends (the
/// peer closes it, every handle and stream is dropped, or a PING goes
/// unanswered).
struct Driver<T: AsyncRead + AsyncWrite + Unpin> {
    connection: h2::client::Connection<T, Bytes>,
    keepalive: Option<Keepalive>,
    authority: Arc<str>,
}

/// PINGs every `interval` while calls are open; a PING unanswered within
/// `timeout` ends the connection, so its calls fail instead of hanging on a
/// peer that went silent.
struct Keepalive {
    ping_pong: h2::PingPong,
    calls: OpenCalls,
    interval: Duration,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
}

/// What the keep-alive asks of the connection.
enum Verdict {
    Fine,
    Dead,
}

impl Keepalive {
    fn poll(&mut self, cx: &mut Context<'_>) -> Verdict {
        loop {
            if self.awaiting_pong {
                match self.ping_pong.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.awaiting_pong = false;
                        let next = tokio::time::Instant::now() + self.interval;
                        self.timer.as_mut().reset(next);
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Verdict::Fine, // the connection ends by itself
                    Poll::Pending => {}
                }
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Verdict::Fine;
            }
            if self.awaiting_pong {
                return Verdict::Dead;
            }
            let calls_open = self.calls.any();
            let next = tokio::time::Instant::now();
            if calls_open && self.ping_pong.send_ping(h2::Ping::opaque()).is_ok() {
                self.awaiting_pong = true;
                self.timer.as_mut().reset(next + self.timeout);
            } else {
                self.timer.as_mut().reset(next + self.interval);
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Driver<T> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Poll::Ready(result) = Pin::new(&mut this.connection).poll(cx) {
            if let Err(error) = result {
                tracing::debug!(endpoint = %this.authority, %error, "endpoint connection ended");
            }
            return Poll::Ready(());
        }
        if let Some(keepalive) = &mut this.keepalive {
            if let Verdict::Dead = keepalive.poll(cx) {
                tracing::warn!(
                    endpoint = %this.authority,
                    timeout = ?keepalive.timeout,
                    "endpoint connection closed: a keep-alive PING went unanswered"
                );
                // Dropping the connection fails its open calls.
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}
