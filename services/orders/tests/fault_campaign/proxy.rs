//! A TCP proxy in front of one upstream (orders B calls payments and
//! inventory through one each): passes bytes, delays them in either
//! direction, or kills the connection when a reply comes (the request was
//! served; the answer is lost).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{tcp::OwnedReadHalf, tcp::OwnedWriteHalf, TcpListener, TcpStream},
};

/// What the proxy does to the bytes now.
#[derive(Debug, Default)]
struct Mode {
    /// Each chunk towards the server waits this long (0: none).
    request_delay_ms: AtomicU64,
    /// Each chunk towards the client waits this long (0: none).
    reply_delay_ms: AtomicU64,
    /// A reply ends the connection instead of passing.
    drop_replies: AtomicBool,
}

/// One proxy, listening on a free loopback port.
pub struct FaultProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    mode: Arc<Mode>,
}

impl FaultProxy {
    /// Starts a proxy to `backend`.
    pub async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let mode = Arc::new(Mode::default());
        let shared = Arc::clone(&mode);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pipe(client, backend, Arc::clone(&shared)));
            }
        });
        Self { address, mode }
    }

    /// Passes everything as it comes.
    pub fn pass(&self) {
        self.delay_requests(Duration::ZERO);
        self.delay_replies(Duration::ZERO);
        self.mode.drop_replies.store(false, Ordering::SeqCst);
    }

    /// Requests reach the server `delay` late (its effect lands late).
    pub fn delay_requests(&self, delay: Duration) {
        self.mode
            .request_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Replies reach the client `delay` late (the server has acted).
    pub fn delay_replies(&self, delay: Duration) {
        self.mode
            .reply_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The next replies end their connection instead of arriving.
    pub fn drop_replies(&self) {
        self.mode.drop_replies.store(true, Ordering::SeqCst);
    }
}

async fn pipe(client: TcpStream, backend: SocketAddr, mode: Arc<Mode>) {
    let Ok(server) = TcpStream::connect(backend).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let upstream = forward(
        client_read,
        server_write,
        Arc::clone(&mode),
        Direction::Request,
    );
    let downstream = forward(server_read, client_write, mode, Direction::Reply);
    // Either side ending closes both (dropping the halves).
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Reply,
}

async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: Arc<Mode>,
    direction: Direction,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let delay_ms = match direction {
            Direction::Request => mode.request_delay_ms.load(Ordering::SeqCst),
            Direction::Reply => {
                if mode.drop_replies.load(Ordering::SeqCst) {
                    return;
                }
                mode.reply_delay_ms.load(Ordering::SeqCst)
            }
        };
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
