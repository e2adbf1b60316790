//! `mesh_authz_oldest_decision_age_seconds`: how long ago the agent last
//! confirmed the oldest decision a live connection relies on (0 with none).
//! Normally at most one re-check period; it grows while the agent does not
//! answer, up to `--authz-max-stale`. Read at scrape time from every
//! authorizer of the process.

use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::Shared;
use crate::telemetry::metrics::register_gauge_fn;

static AUTHORIZERS: LazyLock<Mutex<Vec<Weak<Shared>>>> = LazyLock::new(|| {
    register_gauge_fn(
        "mesh_authz_oldest_decision_age_seconds",
        "Seconds since the Consul agent last confirmed the oldest authorization decision a live \
         inbound connection relies on (grows while the agent does not answer; refused past \
         --authz-max-stale)",
        &[],
        || i64::try_from(oldest_decision_age().as_secs()).unwrap_or(i64::MAX),
    );
    Mutex::default()
});

fn authorizers() -> std::sync::MutexGuard<'static, Vec<Weak<Shared>>> {
    AUTHORIZERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts `shared`'s live decisions in the gauge.
pub(super) fn track(shared: &Arc<Shared>) {
    let mut authorizers = authorizers();
    authorizers.retain(|weak| weak.strong_count() > 0);
    authorizers.push(Arc::downgrade(shared));
}

/// The age of the oldest decision in use by a live connection.
pub(super) fn oldest_decision_age() -> std::time::Duration {
    authorizers()
        .iter()
        .filter_map(Weak::upgrade)
        .flat_map(|shared| {
            shared
                .lock()
                .values()
                .filter(|caller| caller.is_live())
                .map(|caller| caller.current().confirmed.elapsed())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or_default()
}
