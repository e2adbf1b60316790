//! Free loopback ports.

/// A loopback TCP port that is free now and was never handed out before by
/// this process (so parallel tests in one binary do not collide; the Consul
/// agents the harness starts draw from the same pool).
pub fn free_port() -> u16 {
    localenv::ports::free_port().expect("a free loopback port")
}
