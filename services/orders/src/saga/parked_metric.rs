//! `orders_parked{reason}`: how many orders wait for an operator, by
//! reason. Every instance reads the count from the shared database after
//! each recovery round, so any instance's metrics (and `mesh status`, which
//! reads them) show it.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Once,
};

use crate::domain::ParkReason;

/// The count of each reason, in [`ParkReason::ALL`]'s order.
static PARKED: [AtomicI64; ParkReason::ALL.len()] =
    [const { AtomicI64::new(0) }; ParkReason::ALL.len()];

static REGISTER: Once = Once::new();

/// Sets the gauges to `counts` (reason as stored, count); a reason not
/// listed counts 0. The first call registers them.
pub(super) fn set(counts: &[(String, i64)]) {
    REGISTER.call_once(|| {
        for (index, reason) in ParkReason::ALL.into_iter().enumerate() {
            mesh::telemetry::metrics::register_gauge_fn(
                "orders_parked",
                "Orders the saga parked for an operator (the upstream state contradicts it), by reason",
                &[("reason", reason.as_str())],
                move || PARKED[index].load(Ordering::Relaxed),
            );
        }
    });
    for (index, reason) in ParkReason::ALL.into_iter().enumerate() {
        let count = counts
            .iter()
            .filter(|(stored, _)| stored == reason.as_str())
            .map(|(_, count)| *count)
            .sum();
        PARKED[index].store(count, Ordering::Relaxed);
    }
}
