//! The hand-off between the units that record events and this instance's
//! relay. The unit that records an event also takes the order's lease for
//! this relay (when no other relay holds a live one); once the unit's commit
//! is acknowledged, the store hands the relay the order, the lease's end and
//! the event itself, and wakes it. So on the happy path the relay publishes
//! with no lease write and no read of its own: the event it publishes is the
//! one the unit wrote, and the row is only deleted after the broker's
//! confirmation, as always (ADR 0020, "Events handed over in memory").
//!
//! The events an order was handed are published from memory only while
//! they are all of its pending events, in sequence from its first: anything
//! else (a later event without the earlier ones, more events than the
//! hand-off keeps, a unit that recorded without taking the lease) makes the
//! relay read the outbox, which has every event.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::Notify;

use super::Pending;

/// The most events the hand-off keeps for the relay at a time (their
/// leases are kept whatever the count): beyond it, as when the broker is
/// down and the relay cannot keep up, events wait in the outbox alone and
/// the relay reads them from there.
pub const KEPT_EVENTS: usize = 1024;

/// What a committed unit hands its instance's relay: the end of the order's
/// lease it took for the relay, and the event it recorded.
#[derive(Debug, Clone)]
pub struct Handed {
    /// The lease's end.
    pub until_unix_ms: i64,
    /// The event, as written in the outbox row.
    pub event: Pending,
}

/// Orders handed to the relay and woken; shared by the store and the relay.
#[derive(Debug, Clone)]
pub struct Wake(Arc<Handoff>);

#[derive(Debug)]
struct Handoff {
    notify: Notify,
    owner: String,
    lease_ms: i64,
    /// A commit the hand-off does not cover (see [`Wake::take_read_needed`]).
    read_needed: AtomicBool,
    orders: Mutex<Orders>,
}

/// The handed orders, with how many events they keep in all.
#[derive(Debug, Default)]
struct Orders {
    by_id: HashMap<String, HandedOrder>,
    kept_events: usize,
}

/// One handed order.
#[derive(Debug)]
struct HandedOrder {
    /// The end of the lease the last unit took.
    until_unix_ms: i64,
    /// Its events in sequence from its first, while `complete`.
    events: Vec<Pending>,
    /// `events` are every event the order has had: the first is its
    /// sequence 1 and each next one follows the one before.
    complete: bool,
}

impl Orders {
    fn remove(&mut self, order_id: &str) -> Option<HandedOrder> {
        let removed = self.by_id.remove(order_id)?;
        self.kept_events -= removed.events.len();
        Some(removed)
    }
}

impl Wake {
    /// The hand-off to the relay leasing as `owner` for `lease` at a time.
    pub fn new(owner: impl Into<String>, lease: Duration) -> Self {
        Self(Arc::new(Handoff {
            notify: Notify::new(),
            owner: owner.into(),
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2),
            read_needed: AtomicBool::new(false),
            orders: Mutex::new(Orders::default()),
        }))
    }

    /// Whom the leases are taken for.
    pub fn owner(&self) -> &str {
        &self.0.owner
    }

    /// How long a lease lasts, in ms.
    pub fn lease_ms(&self) -> i64 {
        self.0.lease_ms
    }

    /// A committed unit took the event's order's lease for this relay and
    /// recorded `handed.event`; whether the relay may publish it from memory
    /// (it keeps it, and with the order's events kept so far it is every
    /// event the order has had).
    pub(crate) fn hand_over(&self, handed: Handed) -> bool {
        let mut orders = self.orders();
        let keep = orders.kept_events < KEPT_EVENTS;
        let Handed {
            until_unix_ms,
            event,
        } = handed;
        let order_id = event.order_id.clone();
        let sequence = event.sequence;
        let order = orders.by_id.entry(order_id).or_insert_with(|| HandedOrder {
            until_unix_ms,
            events: Vec::new(),
            complete: true,
        });
        order.until_unix_ms = until_unix_ms;
        let follows = order
            .events
            .last()
            .map_or(sequence == 1, |last| last.sequence + 1 == sequence);
        let mut dropped = 0;
        if order.complete && follows && keep {
            order.events.push(event);
        } else {
            order.complete = false;
            dropped = order.events.len();
            order.events.clear();
        }
        let complete = order.complete;
        orders.kept_events = orders.kept_events + usize::from(complete) - dropped;
        complete
    }

    /// The end of the lease a committed unit took on `order_id` for this
    /// relay, if one did since the order was last taken (the relay then
    /// holds it and reads its events from the outbox).
    pub fn take_handed(&self, order_id: &str) -> Option<i64> {
        self.orders()
            .remove(order_id)
            .map(|order| order.until_unix_ms)
    }

    /// Up to `orders` handed orders whose events the relay may publish from
    /// memory at `now_unix_ms`, the longest waiting first, each with its
    /// events in sequence: every event the order has had, under a lease
    /// with more than half its time left (an older one is renewed by the
    /// read path's lease statement). Taken: each is published once.
    pub fn take_ready(&self, orders: usize, now_unix_ms: i64) -> Vec<(String, Vec<Pending>)> {
        let mut handed = self.orders();
        let half = self.0.lease_ms / 2;
        let mut ready: Vec<(i64, String)> = handed
            .by_id
            .iter()
            .filter(|(_, order)| {
                order.complete
                    && !order.events.is_empty()
                    && order.until_unix_ms - now_unix_ms > half
            })
            .map(|(order_id, order)| (order.events[0].created_at_unix_ms, order_id.clone()))
            .collect();
        ready.sort_unstable();
        ready.truncate(orders);
        ready
            .into_iter()
            .filter_map(|(_, order_id)| {
                let order = handed.remove(&order_id)?;
                Some((order_id, order.events))
            })
            .collect()
    }

    /// Forgets hand-offs whose lease ended before `now_unix_ms` (orders
    /// another path published meanwhile), so the map stays bounded.
    pub fn forget_ended(&self, now_unix_ms: i64) {
        let mut orders = self.orders();
        let ended: Vec<String> = orders
            .by_id
            .iter()
            .filter(|(_, order)| order.until_unix_ms <= now_unix_ms)
            .map(|(order_id, _)| order_id.clone())
            .collect();
        for order_id in ended {
            orders.remove(&order_id);
        }
    }

    /// How many events the hand-off keeps now.
    #[cfg(test)]
    fn kept_events(&self) -> usize {
        self.orders().kept_events
    }

    fn orders(&self) -> std::sync::MutexGuard<'_, Orders> {
        // A panic while holding it cannot leave the map inconsistent.
        self.0
            .orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Something was committed that the hand-off covers: the relay has what
    /// it needs in memory (a wake with no relay waiting is kept for its next
    /// wait).
    pub fn notify(&self) {
        self.0.notify.notify_one();
    }

    /// Something was committed that the hand-off does not cover (an event
    /// recorded without the lease, or one the relay may not publish from
    /// memory): its next round reads the outbox.
    pub fn notify_read(&self) {
        self.0.read_needed.store(true, Ordering::Release);
        self.0.notify.notify_one();
    }

    /// Whether a commit asked for a read since the last call.
    pub fn take_read_needed(&self) -> bool {
        self.0.read_needed.swap(false, Ordering::AcqRel)
    }

    /// Waits for the next [`Wake::notify`] or [`Wake::notify_read`].
    pub async fn notified(&self) {
        self.0.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE_MS: i64 = 30_000;

    fn wake() -> Wake {
        Wake::new("relay-a", Duration::from_millis(LEASE_MS as u64))
    }

    fn handed(order_id: &str, sequence: i64, at: i64) -> Handed {
        let mut event = Pending::for_test(order_id, sequence);
        event.created_at_unix_ms = at;
        Handed {
            until_unix_ms: at + LEASE_MS,
            event,
        }
    }

    fn ids(ready: &[(String, Vec<Pending>)]) -> Vec<Vec<String>> {
        ready
            .iter()
            .map(|(_, events)| events.iter().map(|event| event.event_id.clone()).collect())
            .collect()
    }

    #[test]
    fn an_orders_events_from_its_first_are_ready_in_sequence_the_longest_waiting_first() {
        let wake = wake();
        assert!(wake.hand_over(handed("ord_b", 1, 20)));
        assert!(wake.hand_over(handed("ord_a", 1, 10)));
        assert!(wake.hand_over(handed("ord_a", 2, 30)));
        assert_eq!(wake.kept_events(), 3);
        let ready = wake.take_ready(8, 40);
        assert_eq!(ids(&ready), [vec!["ord_a-1", "ord_a-2"], vec!["ord_b-1"]]);
        assert_eq!(wake.kept_events(), 0);
        assert!(wake.take_ready(8, 40).is_empty(), "each is taken once");
        assert_eq!(wake.take_handed("ord_a"), None);
    }

    #[test]
    fn a_later_event_without_the_earlier_ones_is_left_to_the_read_with_its_lease() {
        let wake = wake();
        // Its first event was published (or handed) before: only the
        // outbox knows whether it is still pending.
        assert!(!wake.hand_over(handed("ord_a", 2, 10)));
        assert!(wake.take_ready(8, 20).is_empty());
        assert_eq!(wake.take_handed("ord_a"), Some(10 + LEASE_MS));
        // A gap within the kept events likewise.
        assert!(wake.hand_over(handed("ord_b", 1, 10)));
        assert!(!wake.hand_over(handed("ord_b", 3, 20)));
        assert!(
            !wake.hand_over(handed("ord_b", 4, 30)),
            "still not complete"
        );
        assert!(wake.take_ready(8, 40).is_empty());
        assert_eq!(wake.kept_events(), 0);
        assert_eq!(wake.take_handed("ord_b"), Some(30 + LEASE_MS));
    }

    #[test]
    fn a_lease_with_half_its_time_or_less_left_is_left_to_the_read() {
        let wake = wake();
        assert!(wake.hand_over(handed("ord_a", 1, 0)));
        assert!(wake.take_ready(8, LEASE_MS / 2).is_empty());
        assert_eq!(wake.take_ready(8, LEASE_MS / 2 - 1).len(), 1);
    }

    #[test]
    fn at_most_the_orders_asked_for_are_taken() {
        let wake = wake();
        for (at, order_id) in ["ord_a", "ord_b", "ord_c"].into_iter().enumerate() {
            assert!(wake.hand_over(handed(order_id, 1, at as i64)));
        }
        let first = wake.take_ready(2, 10);
        assert_eq!(ids(&first), [vec!["ord_a-1"], vec!["ord_b-1"]]);
        assert_eq!(ids(&wake.take_ready(2, 10)), [vec!["ord_c-1"]]);
    }

    #[test]
    fn beyond_the_kept_events_orders_keep_their_leases_and_wait_for_the_read() {
        let wake = wake();
        for at in 0..KEPT_EVENTS {
            assert!(wake.hand_over(handed(&format!("ord_{at}"), 1, at as i64)));
        }
        assert!(!wake.hand_over(handed("ord_more", 1, 0)));
        assert_eq!(wake.kept_events(), KEPT_EVENTS);
        assert_eq!(wake.take_handed("ord_more"), Some(LEASE_MS));
        // Taking some makes room again.
        assert_eq!(wake.take_ready(10, 0).len(), 10);
        assert!(wake.hand_over(handed("ord_next", 1, 0)));
    }

    #[test]
    fn ended_leases_are_forgotten_with_their_events() {
        let wake = wake();
        assert!(wake.hand_over(handed("ord_a", 1, 0)));
        assert!(wake.hand_over(handed("ord_b", 1, 100)));
        wake.forget_ended(LEASE_MS + 50);
        assert_eq!(wake.kept_events(), 1);
        assert_eq!(wake.take_handed("ord_a"), None);
        assert_eq!(wake.take_handed("ord_b"), Some(100 + LEASE_MS));
    }

    #[test]
    fn a_read_is_asked_for_until_taken() {
        let wake = wake();
        assert!(!wake.take_read_needed());
        wake.notify();
        assert!(!wake.take_read_needed());
        wake.notify_read();
        assert!(wake.take_read_needed());
        assert!(!wake.take_read_needed());
    }
}
