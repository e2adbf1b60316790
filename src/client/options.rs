//! The client's tunables, with linkerd's and gRPC's defaults: why each
//! default is what it is is written beside it, in [`ClientOptions::default`].

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
    /// The defaults, each with its reason (ADR 0007 has the decisions).
    fn default() -> Self {
        Self {
            // Bounds a call nobody gave a deadline (a tool, the demo seeding) so
            // that a lost server never hangs its caller; long enough for three
            // attempts of 3 s, and for a whole PlaceOrder saga (orders' own
            // upstream calls take at most 2 s each).
            default_deadline: Duration::from_secs(10),
            // On a LAN a healthy instance answers in milliseconds: an attempt
            // still running after 3 s is better retried on another instance
            // (when safe) than waited for, and three of them fit in the deadline.
            per_try_timeout: Duration::from_secs(3),
            // The first attempt and two retries: enough to go around one bad
            // instance of a service with two, while one call costs at most
            // three (gRPC's A6 caps it at five).
            max_attempts: 3,
            // linkerd's retry budget: over a 10 s window, retries add at most
            // 20 % to the calls that succeed…
            budget_ttl: Duration::from_secs(10),
            // …plus 10 per second always, so that a caller with little
            // traffic can still retry.
            budget_min_per_sec: 10,
            budget_retry_ratio: 0.2,
            // linkerd's figure: a request that found no ready endpoint for 3 s
            // fails UNAVAILABLE ("no healthy instance") instead of queueing
            // while the whole service is down.
            fail_fast_after: Duration::from_secs(3),
            // linkerd ejects after 7; on loopback a dead instance fails a
            // request in microseconds, and 5 keeps that burst of failures short.
            eject_after_failures: 5,
            // linkerd's failure-accrual backoff: 1 s first, doubling (±25 %) …
            eject_min_backoff: Duration::from_secs(1),
            // … to a minute: a crashed instance that comes back is tried again
            // at least once a minute.
            eject_max_backoff: Duration::from_secs(60),
            // linkerd's PeakEWMA defaults: an unmeasured endpoint counts as
            // 30 ms (a typical in-datacenter RPC), …
            ewma_default_rtt: Duration::from_millis(30),
            // … and a measurement fades over 10 s, so one slow answer does not
            // shun an endpoint for long.
            ewma_decay: Duration::from_secs(10),
            // Requests waiting for the balancer across all callers of a target:
            // far above what a service's handlers have in flight, yet bounded
            // (a caller beyond it waits instead of growing memory).
            buffer_capacity: 1024,
            // On a LAN a connect takes well under a millisecond; 500 ms leaves
            // room for a loaded host while a dead address fails fast enough to
            // retry elsewhere within one 3 s attempt.
            connect_timeout: Duration::from_millis(500),
            // A PING every 30 s on a busy connection finds a silently dead peer
            // (a cut network, a frozen host) without chattering; …
            http2_keepalive_interval: Duration::from_secs(30),
            // … unanswered for 10 s, the connection is closed and its calls fail
            // (and are retried when safe) instead of hanging.
            http2_keepalive_timeout: Duration::from_secs(10),
            // Every instance of the target, whatever its tags.
            tag: None,
            // Consul's own default blocking wait (its maximum is 10 min): the
            // watch returns at once on a change, so a long wait costs nothing.
            watch_wait: Duration::from_secs(300),
            // Plaintext unless the caller has an identity (`--mtls=required`
            // gives every service one).
            identity: None,
        }
    }
}
