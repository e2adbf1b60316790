//! A TCP proxy on a free loopback port that forwards to one upstream and can
//! be told, at any time, to delay or to blackhole the traffic: what a slow or
//! unreachable Consul agent looks like to the process that talks to it,
//! while the real agent behind it keeps working for everyone else.
//!
//! The fault applies to bytes already flowing on open connections too (a
//! client's pooled keep-alive connection does not escape it):
//! - [`Fault::Pass`]: forward as they come;
//! - [`Fault::Delay`]: every chunk the upstream answers reaches the client
//!   that much later (requests go through at once), so each HTTP answer is
//!   late by at least the delay;
//! - [`Fault::Blackhole`]: nothing is forwarded either way and new
//!   connections are accepted but never reach the upstream — the TCP
//!   connection stays open and silent, as behind a dropped route. Held bytes
//!   flow again once the fault is lifted.
//!
//! Everything runs on plain threads, independent of the test's runtime;
//! dropping the proxy stops them and closes every connection.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

/// What the proxy does to the traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything at once.
    Pass,
    /// Hold every chunk from the upstream this long before passing it on.
    Delay(Duration),
    /// Forward nothing; accept connections but never reach the upstream.
    Blackhole,
}

/// How often idle threads look at the fault and the stop flag.
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug)]
struct Shared {
    fault: Mutex<Fault>,
    stop: AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Waits while the traffic is blackholed; `false` once stopped.
    fn wait_while_blackholed(&self) -> bool {
        while self.fault() == Fault::Blackhole {
            if self.stopped() {
                return false;
            }
            std::thread::sleep(POLL);
        }
        !self.stopped()
    }

    /// Keeps a handle of `socket` so that [`Drop`] can shut it down.
    fn track(&self, socket: &TcpStream) {
        if let Ok(clone) = socket.try_clone() {
            self.sockets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(clone);
        }
    }
}

/// A running proxy. Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`
    /// (`host:port`), passing everything until told otherwise.
    pub fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|error| panic!("proxy upstream {upstream:?}: {error}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy's port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let address = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::Pass),
            stop: AtomicBool::new(false),
            sockets: Mutex::default(),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(&listener, upstream, &shared))
        };
        Self {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:<port>`: give this to the process under test instead of the upstream.
    pub fn addr(&self) -> String {
        self.address.to_string()
    }

    /// Applies `fault` from now on (to open connections as well).
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for socket in self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = socket.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stopped() {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                shared.track(&client);
                let shared = shared.clone();
                std::thread::spawn(move || connect_and_pump(client, upstream, &shared));
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Reaches the upstream once the traffic is not blackholed, then pumps both ways.
fn connect_and_pump(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) {
    if !shared.wait_while_blackholed() {
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    shared.track(&server);
    let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let requests = {
        let shared = shared.clone();
        std::thread::spawn(move || pump(client_reader, server, &shared, false))
    };
    pump(server_reader, client, shared, true);
    let _ = requests.join();
}

/// Copies `from` into `to` chunk by chunk, applying the fault to each chunk
/// (delays only when `answers`, i.e. upstream → client), until either side
/// closes or the proxy stops.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, answers: bool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if shared.stopped() {
            break;
        }
        let read = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue
            }
            Err(_) => break,
        };
        if !shared.wait_while_blackholed() {
            break;
        }
        if let Fault::Delay(delay) = shared.fault() {
            if answers {
                std::thread::sleep(delay);
            }
        }
        if !shared.wait_while_blackholed() || to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An upstream that echoes what it reads.
    fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = socket.try_clone().expect("clone");
                    let mut writer = socket;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        address
    }

    fn round_trip(socket: &mut TcpStream) -> Result<Duration, std::io::Error> {
        let started = Instant::now();
        socket.write_all(b"ping")?;
        let mut answer = [0u8; 4];
        socket.read_exact(&mut answer)?;
        assert_eq!(&answer, b"ping");
        Ok(started.elapsed())
    }

    #[test]
    fn passes_delays_and_blackholes_open_connections() {
        let proxy = FaultProxy::start(&echo_server());
        let mut socket = TcpStream::connect(proxy.addr()).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        round_trip(&mut socket).expect("passes");

        proxy.set(Fault::Delay(Duration::from_millis(300)));
        let delayed = round_trip(&mut socket).expect("delayed");
        assert!(delayed >= Duration::from_millis(300), "{delayed:?}");

        proxy.set(Fault::Blackhole);
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let error = round_trip(&mut socket).expect_err("blackholed");
        assert!(
            matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{error}"
        );
        // A new connection is accepted but stays silent too.
        let mut fresh = TcpStream::connect(proxy.addr()).expect("accepted");
        fresh
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        assert!(round_trip(&mut fresh).is_err());

        // Lifted: the held bytes arrive.
        proxy.set(Fault::Pass);
        fresh
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut answer = [0u8; 4];
        fresh.read_exact(&mut answer).expect("held bytes arrive");
        assert_eq!(&answer, b"ping");
    }
}
