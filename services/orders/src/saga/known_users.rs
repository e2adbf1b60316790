//! The users that `users` has said exist, remembered for a while so that a
//! customer's next order does not ask again (docs/adr/0025-*).
//!
//! Users cannot be deleted (the users API has no such call), so "this user
//! exists" stays true once `users` has said it. Only that answer is kept:
//! a user not found is asked about again on the next order, so a user
//! created a moment later can order at once. The memory is bounded in both
//! directions: at most [`CAPACITY`] users (the least recently ordering one
//! goes first) and each for at most its time to live, after which `users`
//! is asked again (a users database restored from an older backup is
//! noticed within it).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hashlink::LruCache;

/// How many users one orders instance remembers.
pub const CAPACITY: usize = 10_000;

/// Users known to exist, each with when `users` said so; clones share it.
#[derive(Debug, Clone)]
pub struct KnownUsers {
    ttl: Duration,
    confirmed: Arc<Mutex<LruCache<String, Instant>>>,
}

impl KnownUsers {
    /// A memory keeping each user for `ttl` (zero: nothing is remembered,
    /// every order asks `users`) and at most `capacity` users.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            confirmed: Arc::new(Mutex::new(LruCache::new(capacity.max(1)))),
        }
    }

    /// Whether `users` said `user_id` exists less than the time to live ago.
    pub fn contains(&self, user_id: &str) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let mut confirmed = self.lock();
        match confirmed.get(user_id) {
            Some(at) if at.elapsed() < self.ttl => true,
            Some(_) => {
                confirmed.remove(user_id);
                false
            }
            None => false,
        }
    }

    /// Records that `users` said `user_id` exists, now.
    pub fn remember(&self, user_id: &str) {
        if self.ttl.is_zero() {
            return;
        }
        self.lock().insert(user_id.to_owned(), Instant::now());
    }

    /// How many users are remembered (expired ones included until asked for).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Instant>> {
        // The map stays consistent whatever a panicking holder was doing.
        self.confirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_confirmed_user_for_its_time_to_live() {
        let known = KnownUsers::new(Duration::from_millis(50), 8);
        assert!(!known.contains("u_1"));
        known.remember("u_1");
        assert!(known.contains("u_1"));
        assert!(!known.contains("u_2"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!known.contains("u_1"), "asked again after the time to live");
        assert_eq!(known.len(), 0, "the expired entry is dropped");
    }

    #[test]
    fn holds_at_most_its_capacity_dropping_the_least_recently_used() {
        let known = KnownUsers::new(Duration::from_secs(60), 3);
        for user in ["a", "b", "c"] {
            known.remember(user);
        }
        assert!(known.contains("a"), "a is now the most recently used");
        known.remember("d");
        assert_eq!(known.len(), 3);
        assert!(!known.contains("b"), "b was the least recently used");
        for user in ["a", "c", "d"] {
            assert!(known.contains(user), "{user}");
        }
        for index in 0..1_000 {
            known.remember(&format!("u_{index}"));
        }
        assert_eq!(known.len(), 3);
    }

    #[test]
    fn a_zero_time_to_live_remembers_nothing() {
        let known = KnownUsers::new(Duration::ZERO, 8);
        known.remember("u_1");
        assert!(!known.contains("u_1"));
        assert_eq!(known.len(), 0);
    }
}
