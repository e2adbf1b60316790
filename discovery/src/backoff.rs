//! The mesh's one backoff — capped exponential, with a choice of jitter —
//! used by Consul's watches and the registrar here, the mesh client's
//! ejection of failing endpoints and `mesh up`'s restarts of crashed
//! instances; and a token bucket that keeps a watch which keeps returning at
//! once from hammering Consul.

use std::time::Duration;

use tokio::time::Instant;

/// Delays `min, 2·min, 4·min … max` (the steps), each spread by [`Jitter`].
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: Jitter,
    attempt: u32,
}

/// How a delay is drawn from its step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// The step itself (restarts a person watches: 1 s, 2 s, 4 s…).
    None,
    /// Uniformly from the upper half of the step, never below `min` ("equal
    /// jitter"): many clients that failed together do not retry together, yet
    /// the delay stays within `[min, max]`.
    Equal,
    /// Uniformly within ± this fraction of the step (`0.25`: 75 % to 125 %),
    /// so that endpoints ejected together do not return together, the first
    /// time included.
    Around(f64),
}

impl Backoff {
    /// Equal jitter ([`Jitter::Equal`]). `min` is raised to 1 ms and `max` to `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            jitter: Jitter::Equal,
            attempt: 0,
        }
    }

    /// The same steps with another jitter.
    pub fn with_jitter(self, jitter: Jitter) -> Self {
        Self { jitter, ..self }
    }

    /// The step (before jitter) of the current attempt.
    fn ceiling(&self) -> Duration {
        self.min
            .checked_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The next delay; the step after it doubles (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Equal => {
                let floor = (ceiling / 2).max(self.min);
                if floor >= ceiling {
                    return ceiling;
                }
                let nanos = rand::random_range(floor.as_nanos()..=ceiling.as_nanos());
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
            Jitter::Around(fraction) => {
                let fraction = fraction.clamp(0.0, 1.0);
                if fraction == 0.0 {
                    return ceiling;
                }
                ceiling.mul_f64(rand::random_range(1.0 - fraction..=1.0 + fraction))
            }
        }
    }

    /// After a success: start again from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A token bucket: `burst` requests at once, then one per `interval`.
///
/// Consul's blocking-query guide asks clients to rate-limit their watches: an
/// index that does not block (a bug, churn, a reset) would otherwise turn the
/// watch into a busy loop against the servers.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    burst: u32,
    interval: Duration,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(burst: u32, interval: Duration) -> Self {
        Self {
            burst: burst.max(1),
            interval: interval.max(Duration::from_millis(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() / self.interval.as_secs_f64())
            .min(f64::from(self.burst));
    }

    /// How long to wait before the next request may go (zero if a token is free);
    /// takes the token.
    pub(crate) fn delay(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            self.interval.mul_f64(-self.tokens)
        }
    }

    /// Waits for a token.
    pub(crate) async fn acquire(&mut self) {
        let delay = self.delay(Instant::now());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for _ in 0..200 {
            let mut backoff = Backoff::new(min, max);
            let mut previous_ceiling = Duration::ZERO;
            for attempt in 0..40 {
                let ceiling = backoff.ceiling();
                assert!(ceiling >= previous_ceiling, "steps never shrink");
                previous_ceiling = ceiling;
                let delay = backoff.next_delay();
                assert!(delay >= min && delay <= max, "attempt {attempt}: {delay:?}");
                assert!(
                    delay <= ceiling && delay >= ceiling / 2,
                    "attempt {attempt}: {delay:?} vs {ceiling:?}"
                );
            }
            assert_eq!(previous_ceiling, max, "reaches the cap");
        }
    }

    #[test]
    fn first_delay_is_min_to_2min_and_reset_starts_over() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        let second = backoff.next_delay();
        assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            backoff.next_delay();
            backoff.next_delay();
            seen.insert(backoff.next_delay());
        }
        assert!(seen.len() > 10, "{seen:?}");
    }

    #[test]
    fn degenerate_bounds_do_not_panic() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        for _ in 0..100 {
            assert_eq!(backoff.next_delay(), Duration::from_millis(1));
        }
        let mut backoff = Backoff::new(Duration::from_secs(3), Duration::from_secs(1));
        assert_eq!(backoff.next_delay(), Duration::from_secs(3));
        let mut backoff = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        backoff.next_delay();
        backoff.next_delay();
    }

    #[test]
    fn without_jitter_the_steps_are_exact() {
        let mut backoff =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).with_jitter(Jitter::None);
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_around_the_step_spreads_the_first_delay_too() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8))
                .with_jitter(Jitter::Around(0.25));
            let first = backoff.next_delay();
            assert!(first >= Duration::from_millis(750) && first <= Duration::from_millis(1250));
            seen.insert(first);
            for _ in 0..5 {
                backoff.next_delay();
            }
            // At the cap: 8 s ± 25 %.
            let capped = backoff.next_delay();
            assert!(capped >= Duration::from_secs(6) && capped <= Duration::from_secs(10));
        }
        assert!(seen.len() > 10, "{seen:?}");
    }

    #[test]
    fn rate_limit_allows_a_burst_then_spaces_requests() {
        let start = Instant::now();
        let mut limit = RateLimit::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert_eq!(limit.delay(start), Duration::ZERO);
        }
        let fourth = limit.delay(start);
        assert_eq!(fourth, Duration::from_millis(200));
        // A watch that blocked for a while has its tokens back.
        let later = start + Duration::from_secs(5);
        assert_eq!(limit.delay(later), Duration::ZERO);
        assert_eq!(limit.delay(later), Duration::ZERO);
        assert_eq!(limit.delay(later), Duration::ZERO);
        assert!(limit.delay(later) > Duration::ZERO);
    }
}
