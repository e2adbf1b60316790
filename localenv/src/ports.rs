//! Free loopback ports, never handed out twice by one process (parallel tests
//! in one binary, or one agent's six ports, do not collide).
//!
//! Candidates are drawn below the kernel's ephemeral range: a port taken
//! from that range (as `bind(:0)` does) can be given to some process's
//! outgoing connection in the moment between being chosen and being bound by
//! the server it was chosen for — a "address already in use" that no check
//! here could prevent. Below the range only listeners compete, and the bind
//! check sees them.

use std::{
    collections::HashSet,
    net::{TcpListener, UdpSocket},
    sync::{Mutex, OnceLock},
};

use crate::Error;

/// How many candidates to try per port wanted.
const ATTEMPTS_PER_PORT: usize = 50;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    HANDED_OUT.get_or_init(Default::default)
}

/// A loopback TCP port that is free now and that this process never handed
/// out before.
pub fn free_port() -> Result<u16, Error> {
    Ok(free_ports(1, false)?[0])
}

/// `count` distinct loopback ports, free now (for UDP too when `udp`: Consul's
/// DNS and Serf use both), none handed out before by this process.
pub fn free_ports(count: usize, udp: bool) -> Result<Vec<u16>, Error> {
    // Holding the sockets until all are chosen keeps the ports distinct.
    let mut held = Vec::with_capacity(count);
    for _ in 0..count * ATTEMPTS_PER_PORT {
        if held.len() == count {
            break;
        }
        let Ok(listener) = TcpListener::bind(("127.0.0.1", candidate())) else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|address| address.port()) else {
            continue;
        };
        let udp_socket = if udp {
            match UdpSocket::bind(("127.0.0.1", port)) {
                Ok(socket) => Some(socket),
                Err(_) => continue,
            }
        } else {
            None
        };
        if handed_out().lock().expect("ports lock").insert(port) {
            held.push((port, listener, udp_socket));
        }
    }
    if held.len() < count {
        return Err(Error::NoFreePorts { count });
    }
    Ok(held.into_iter().map(|(port, _, _)| port).collect())
}

/// Lowest port drawn from: above the registered ports most local servers use.
const LOWEST_CANDIDATE: u16 = 10_000;

/// A random port below the ephemeral range, or 0 (the kernel's choice) when
/// the range is unknown or leaves no room below it.
fn candidate() -> u16 {
    match ephemeral_start() {
        Some(start) if start > LOWEST_CANDIDATE + 1_000 => {
            rand::random_range(LOWEST_CANDIDATE..start)
        }
        _ => 0,
    }
}

/// The first port of the kernel's ephemeral range (Linux).
fn ephemeral_start() -> Option<u16> {
    static START: OnceLock<Option<u16>> = OnceLock::new();
    *START.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Marks `port` as taken (a port the caller chose itself), so that this
/// process hands it out to nobody else.
pub fn reserve(port: u16) {
    handed_out().lock().expect("ports lock").insert(port);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_never_repeated() {
        let first = free_ports(6, true).unwrap();
        let unique: HashSet<u16> = first.iter().copied().collect();
        assert_eq!(unique.len(), 6);
        for port in &first {
            assert!(TcpListener::bind(("127.0.0.1", *port)).is_ok());
        }
        let more = free_ports(6, false).unwrap();
        assert!(more.iter().all(|port| !unique.contains(port)));
        if let Some(start) = ephemeral_start() {
            assert!(
                first.iter().chain(&more).all(|port| *port < start),
                "{first:?} {more:?} not below the ephemeral range from {start}"
            );
        }
        reserve(1);
        assert!(!handed_out().lock().unwrap().insert(1));
    }
}
