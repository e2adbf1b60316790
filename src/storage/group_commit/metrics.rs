//! The writers' metrics, on the process's registry, labelled by `database`
//! (the service's name):
//! - `mesh_storage_write_batches_total`: transactions the writer ran;
//! - `mesh_storage_write_batch_size`: write units per transaction;
//! - `mesh_storage_write_batch_seconds`: from BEGIN to the end of COMMIT (the
//!   durable flush included);
//! - `mesh_storage_write_queue_depth`: units handed to the writer and not yet
//!   taken into a batch;
//! - `mesh_storage_write_units_total{outcome}`: `committed`, `rolled_back`
//!   (the unit failed; its savepoint was undone), `failed` (its batch could
//!   not commit), `refused` (the queue was full).

use std::sync::LazyLock;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};

use crate::telemetry::metrics::with_registry;

/// What became of one write unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnitOutcome {
    /// Its changes are in a committed transaction.
    Committed,
    /// It failed alone: its savepoint was rolled back, the batch committed.
    RolledBack,
    /// Its batch could not commit (or the unit was abandoned).
    Failed,
    /// The queue was full; it never reached the writer.
    Refused,
}

impl UnitOutcome {
    fn label(self) -> &'static str {
        match self {
            UnitOutcome::Committed => "committed",
            UnitOutcome::RolledBack => "rolled_back",
            UnitOutcome::Failed => "failed",
            UnitOutcome::Refused => "refused",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabels {
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabels {
    database: String,
    outcome: &'static str,
}

struct Families {
    batches: Family<DatabaseLabels, Counter>,
    batch_size: Family<DatabaseLabels, Histogram>,
    batch_seconds: Family<DatabaseLabels, Histogram>,
    queue_depth: Family<DatabaseLabels, Gauge>,
    units: Family<UnitLabels, Counter>,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    let families = Families {
        batches: Family::default(),
        batch_size: Family::new_with_constructor(|| {
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
        }),
        batch_seconds: Family::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_125, 2.0, 12,
            ))
        }),
        queue_depth: Family::default(),
        units: Family::default(),
    };
    with_registry(|registry| {
        registry.register(
            "mesh_storage_write_batches",
            "Transactions run by a database's writer (committed or not)",
            families.batches.clone(),
        );
        registry.register(
            "mesh_storage_write_batch_size",
            "Write units committed together in one transaction by a database's writer",
            families.batch_size.clone(),
        );
        registry.register(
            "mesh_storage_write_batch_seconds",
            "Time of one batch from BEGIN to the end of its durable COMMIT",
            families.batch_seconds.clone(),
        );
        registry.register(
            "mesh_storage_write_queue_depth",
            "Write units waiting for a database's writer to take them into a batch",
            families.queue_depth.clone(),
        );
        registry.register(
            "mesh_storage_write_units",
            "Write units handed to a database's writer, by outcome",
            families.units.clone(),
        );
    });
    families
});

/// One database's handles into the families (resolved once per writer).
#[derive(Debug, Clone)]
pub(super) struct WriterMetrics {
    batches: Counter,
    batch_size: Histogram,
    batch_seconds: Histogram,
    queue_depth: Gauge,
    committed: Counter,
    rolled_back: Counter,
    failed: Counter,
    refused: Counter,
}

impl WriterMetrics {
    /// The handles of `database`.
    pub(super) fn new(database: &str) -> Self {
        let labels = DatabaseLabels {
            database: database.to_owned(),
        };
        let units = |outcome: UnitOutcome| {
            FAMILIES
                .units
                .get_or_create(&UnitLabels {
                    database: database.to_owned(),
                    outcome: outcome.label(),
                })
                .clone()
        };
        Self {
            batches: FAMILIES.batches.get_or_create(&labels).clone(),
            batch_size: FAMILIES.batch_size.get_or_create(&labels).clone(),
            batch_seconds: FAMILIES.batch_seconds.get_or_create(&labels).clone(),
            queue_depth: FAMILIES.queue_depth.get_or_create(&labels).clone(),
            committed: units(UnitOutcome::Committed),
            rolled_back: units(UnitOutcome::RolledBack),
            failed: units(UnitOutcome::Failed),
            refused: units(UnitOutcome::Refused),
        }
    }

    /// A unit entered the queue.
    pub(super) fn queued(&self) {
        self.queue_depth.inc();
    }

    /// `count` units left the queue for a batch.
    pub(super) fn dequeued(&self, count: usize) {
        self.queue_depth
            .dec_by(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// A batch of `units` ended after `seconds` (committed or not).
    pub(super) fn batch(&self, units: usize, seconds: f64) {
        self.batches.inc();
        self.batch_size.observe(units as f64);
        self.batch_seconds.observe(seconds);
    }

    /// One unit's outcome.
    pub(super) fn unit(&self, outcome: UnitOutcome) {
        match outcome {
            UnitOutcome::Committed => &self.committed,
            UnitOutcome::RolledBack => &self.rolled_back,
            UnitOutcome::Failed => &self.failed,
            UnitOutcome::Refused => &self.refused,
        }
        .inc();
    }
}
