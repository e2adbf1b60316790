//! Free loopback ports.

use std::{
    collections::HashSet,
    net::TcpListener,
    sync::{Mutex, OnceLock},
};

/// A loopback TCP port that is free now and was never handed out before by
/// this process (so parallel tests in one binary do not collide).
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("bind an ephemeral loopback port")
            .port();
        if handed_out.lock().expect("ports lock").insert(port) {
            return port;
        }
    }
}
