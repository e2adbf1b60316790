//! Per-caller rate limits (GCRA, `governor`): one bucket per token subject,
//! and a stricter one per client address for callers without a token
//! (public methods such as the sign-up, and every refused request). The
//! buckets live in this replica's memory: N replicas allow N times the
//! rate — the limit is per replica.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{clock::Clock as _, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{header, HeaderValue, StatusCode};
use tonic::Code;

use crate::errors::ApiError;

/// Requests per second and burst of one kind of caller; `per_second` 0
/// turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerKey {
    /// A token's subject.
    Subject(String),
    /// A client address (no valid token).
    Address(IpAddr),
}

/// The limiters of one gateway replica.
#[derive(Clone)]
pub struct RateLimits {
    subjects: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    addresses: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("subjects", &self.subjects.is_some())
            .field("addresses", &self.addresses.is_some())
            .finish()
    }
}

fn limiter<K: std::hash::Hash + Eq + Clone>(rate: Rate) -> Option<Arc<DefaultKeyedRateLimiter<K>>> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
    Some(Arc::new(RateLimiter::keyed(
        Quota::per_second(per_second).allow_burst(burst),
    )))
}

impl RateLimits {
    /// Limits for authenticated subjects and for anonymous addresses.
    pub fn new(subjects: Rate, anonymous: Rate) -> Self {
        Self {
            subjects: limiter(subjects),
            addresses: limiter(anonymous),
        }
    }

    /// Takes one request from `key`'s bucket; `Err(wait)` when it is empty
    /// (answer 429 with `Retry-After`).
    pub fn check(&self, key: &CallerKey) -> Result<(), Duration> {
        match key {
            CallerKey::Subject(subject) => match &self.subjects {
                Some(limiter) => limiter
                    .check_key(subject)
                    .map_err(|not_until| not_until.wait_time_from(limiter.clock().now())),
                None => Ok(()),
            },
            CallerKey::Address(address) => match &self.addresses {
                Some(limiter) => limiter
                    .check_key(address)
                    .map_err(|not_until| not_until.wait_time_from(limiter.clock().now())),
                None => Ok(()),
            },
        }
    }

    /// Forgets full buckets every `period`, so memory follows the callers
    /// of the last moments, not every caller ever seen.
    pub fn spawn_cleanup(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                if let Some(limiter) = &this.subjects {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
                if let Some(limiter) = &this.addresses {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            }
        })
    }
}

/// `Retry-After` in whole seconds (at least 1).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

/// 429 with `Retry-After`.
pub(crate) fn too_many_requests(wait: Duration) -> ApiError {
    let seconds = retry_after_seconds(wait);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        Code::ResourceExhausted,
        format!("rate limit exceeded for this caller; retry in {seconds} s"),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_over_its_burst_waits_and_others_do_not() {
        let limits = RateLimits::new(
            Rate {
                per_second: 1,
                burst: 2,
            },
            Rate {
                per_second: 1,
                burst: 1,
            },
        );
        let alice = CallerKey::Subject("alice".into());
        let bob = CallerKey::Subject("bob".into());
        assert!(limits.check(&alice).is_ok());
        assert!(limits.check(&alice).is_ok());
        let wait = limits.check(&alice).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limits.check(&bob).is_ok(), "buckets are per caller");
        let address = CallerKey::Address("192.0.2.1".parse().unwrap());
        assert!(limits.check(&address).is_ok());
        assert!(
            limits.check(&address).is_err(),
            "anonymous callers have their own, stricter limit"
        );
    }

    #[test]
    fn zero_turns_a_limit_off_and_retry_after_rounds_up() {
        let limits = RateLimits::new(
            Rate {
                per_second: 0,
                burst: 0,
            },
            Rate {
                per_second: 0,
                burst: 0,
            },
        );
        for _ in 0..1000 {
            assert!(limits.check(&CallerKey::Subject("a".into())).is_ok());
        }
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
