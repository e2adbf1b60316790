//! Outbox rows whose body cannot be read back (not the hex that
//! `events::text_body` writes: a damaged file, a hand edit). Such a row can
//! never be published; it must not stop the relay for every other order,
//! and its own order's later events must not overtake it. So the relay's
//! reads leave out every event of an order with an unreadable row, and say
//! so once per row in an error line; the order's events stay pending, in
//! the backlog and its oldest-pending age, for an operator to repair.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
};

use super::Pending;

/// At most this many rows are remembered as reported; past it the memory
/// starts again (a row may then be reported a second time).
const MAX_REMEMBERED: usize = 1024;

/// A row that could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unreadable {
    pub(super) order_id: String,
    pub(super) event_id: String,
}

/// The rows already reported, shared by a table's clones.
#[derive(Debug, Clone, Default)]
pub(super) struct Reported(Arc<Mutex<HashSet<String>>>);

impl Reported {
    /// Whether `event_id` is reported for the first time (and remember it).
    fn first_time(&self, event_id: &str) -> bool {
        let mut reported = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if reported.contains(event_id) {
            return false;
        }
        if reported.len() >= MAX_REMEMBERED {
            reported.clear();
        }
        reported.insert(event_id.to_owned())
    }

    /// The events of `rows` whose order has no unreadable row, in their
    /// order; each unreadable row is logged the first time it is seen.
    pub(super) fn readable(&self, rows: Vec<Result<Pending, Unreadable>>) -> Vec<Pending> {
        let mut held_back = HashSet::new();
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Ok(event) => pending.push(event),
                Err(unreadable) => {
                    if self.first_time(&unreadable.event_id) {
                        tracing::error!(
                            order_id = %unreadable.order_id,
                            event_id = %unreadable.event_id,
                            "an outbox row's body is not the hex the outbox writes: the order's events are held back, the other orders' go on"
                        );
                    }
                    held_back.insert(unreadable.order_id);
                }
            }
        }
        if !held_back.is_empty() {
            pending.retain(|event| !held_back.contains(&event.order_id));
        }
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(order_id: &str, sequence: i64) -> Pending {
        Pending::for_test(order_id, sequence)
    }

    fn unreadable(order_id: &str, sequence: i64) -> Unreadable {
        Unreadable {
            order_id: order_id.into(),
            event_id: format!("{order_id}-{sequence}"),
        }
    }

    #[test]
    fn an_unreadable_row_holds_back_its_orders_events_and_no_one_elses() {
        let reported = Reported::default();
        let rows = vec![
            Ok(event("a", 1)),
            Err(unreadable("b", 1)),
            Ok(event("b", 2)),
            Ok(event("c", 1)),
            Ok(event("c", 2)),
        ];
        let left: Vec<String> = reported
            .readable(rows)
            .into_iter()
            .map(|event| event.event_id)
            .collect();
        assert_eq!(left, ["a-1", "c-1", "c-2"]);
    }

    #[test]
    fn each_unreadable_row_is_reported_once_within_a_bounded_memory() {
        let reported = Reported::default();
        assert!(reported.first_time("b-1"));
        assert!(!reported.first_time("b-1"));
        for n in 0..MAX_REMEMBERED * 2 {
            reported.first_time(&format!("x-{n}"));
        }
        let remembered = reported.0.lock().unwrap().len();
        assert!(remembered <= MAX_REMEMBERED, "{remembered}");
    }
}
