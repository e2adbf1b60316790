//! Restart delays for crashed instances: the mesh's one backoff
//! ([`discovery::Backoff`]), without jitter — 1 s, doubling up to 30 s — and
//! back to 1 s once an instance has stayed up for a while.

use std::time::Duration;

use discovery::Jitter;

/// First restart delay.
pub(crate) const MIN: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub(crate) const MAX: Duration = Duration::from_secs(30);
/// An instance that ran this long counts as healthy again: its next crash
/// waits [`MIN`] again.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(60);

/// One instance's restart backoff.
#[derive(Debug, Clone)]
pub(crate) struct Backoff(discovery::Backoff);

impl Default for Backoff {
    fn default() -> Self {
        Self(discovery::Backoff::new(MIN, MAX).with_jitter(Jitter::None))
    }
}

impl Backoff {
    /// The delay before restarting an instance that ran for `uptime` before
    /// exiting; doubles the following one.
    pub(crate) fn after_exit(&mut self, uptime: Duration) -> Duration {
        if uptime >= STABLE_AFTER {
            self.0.reset();
        }
        self.0.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let mut backoff = Backoff::default();
        let quick = Duration::from_millis(100);
        let delays: Vec<u64> = (0..7)
            .map(|_| backoff.after_exit(quick).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.after_exit(STABLE_AFTER), MIN);
        assert_eq!(backoff.after_exit(quick), Duration::from_secs(2));
    }
}
