//! Readiness: a [`Probe`] says whether a server serves yet (and if not, why
//! not, for the error after a timeout); a [`Cancel`] ends a wait early.

use std::{
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

/// Whether a server is ready.
pub trait Probe {
    /// `Ok` once it serves; else what was seen (shown if it never does).
    fn check(&mut self) -> Result<(), String>;
}

impl<F: FnMut() -> Result<(), String>> Probe for F {
    fn check(&mut self) -> Result<(), String> {
        self()
    }
}

/// Ready once something accepts TCP connections at an address — enough for a
/// server that listens only once it can serve (a broker's AMQP port).
#[derive(Debug, Clone, Copy)]
pub struct TcpProbe {
    address: SocketAddr,
}

impl TcpProbe {
    /// Probes `address`.
    pub fn new(address: SocketAddr) -> Self {
        Self { address }
    }
}

impl Probe for TcpProbe {
    fn check(&mut self) -> Result<(), String> {
        TcpStream::connect_timeout(&self.address, Duration::from_millis(500))
            .map(drop)
            .map_err(|error| format!("{}: {error}", self.address))
    }
}

/// Ends a wait early when set (shared: clones see the same flag).
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks every wait on this flag to end.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn tcp_probe_is_ready_once_something_listens() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        assert_eq!(TcpProbe::new(address).check(), Ok(()));
        drop(listener);
        let refused = TcpProbe::new(address).check().unwrap_err();
        assert!(refused.contains(&address.to_string()), "{refused}");
    }

    #[test]
    fn clones_share_the_cancel_flag() {
        let cancel = Cancel::default();
        let other = cancel.clone();
        assert!(!other.is_cancelled());
        cancel.cancel();
        assert!(other.is_cancelled());
    }
}
