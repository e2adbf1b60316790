//! The client's tunables, with linkerd's and gRPC's defaults.

use std::time::Duration;

/// How the mesh client resolves, balances, retries and ejects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of a call that sets none itself and is not made inside a handler.
    pub default_deadline: Duration,
    /// Longest single attempt; a slower one is abandoned (and retried when safe).
    pub per_try_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Retry budget: how long deposits count.
    pub budget_ttl: Duration,
    /// Retry budget: retries always allowed per second.
    pub budget_min_per_sec: u32,
    /// Retry budget: extra load allowed for retries (0.2 = 20 %).
    pub budget_retry_ratio: f32,
    /// A request waiting longer than this for a ready endpoint fails with UNAVAILABLE.
    pub fail_fast_after: Duration,
    /// Consecutive failures (transport errors, UNAVAILABLE) that eject an endpoint.
    pub eject_after_failures: u32,
    /// First ejection period; it doubles on each further ejection.
    pub eject_min_backoff: Duration,
    /// Longest ejection period.
    pub eject_max_backoff: Duration,
    /// PeakEWMA: the RTT assumed for an endpoint with no measurement yet.
    pub ewma_default_rtt: Duration,
    /// PeakEWMA: how fast old latency measurements fade.
    pub ewma_decay: Duration,
    /// Requests waiting for the balancer, shared by every clone of a
    /// target's channel; a caller beyond it waits for room.
    pub buffer_capacity: usize,
    /// TCP connect timeout per endpoint.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval on every endpoint connection while it carries
    /// calls, so a silently dead peer fails them instead of hanging.
    pub http2_keepalive_interval: Duration,
    /// A PING not answered within this closes the connection.
    pub http2_keepalive_timeout: Duration,
    /// Only instances with this Consul tag.
    pub tag: Option<String>,
    /// Consul blocking-query wait.
    pub watch_wait: Duration,
    /// The Connect identity to present (`--mtls=required`): every endpoint is
    /// dialled with mTLS and must prove the target's identity — never
    /// plaintext, whatever its registration says — and endpoints come from
    /// `/v1/health/connect/<target>`. `None` (`--mtls=off`): plaintext.
    pub identity: Option<crate::connect::Identity>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            default_deadline: Duration::from_secs(10),
            per_try_timeout: Duration::from_secs(3),
            max_attempts: 3,
            budget_ttl: Duration::from_secs(10),
            budget_min_per_sec: 10,
            budget_retry_ratio: 0.2,
            fail_fast_after: Duration::from_secs(3),
            eject_after_failures: 5,
            eject_min_backoff: Duration::from_secs(1),
            eject_max_backoff: Duration::from_secs(60),
            ewma_default_rtt: Duration::from_millis(30),
            ewma_decay: Duration::from_secs(10),
            buffer_capacity: 1024,
            connect_timeout: Duration::from_millis(500),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            tag: None,
            watch_wait: Duration::from_secs(300),
            identity: None,
        }
    }
}
