//! The identity and authorization metrics, on the process's Prometheus registry:
//! - `mesh_identity_cert_expiry_timestamp_seconds{identity}`: when the leaf in force expires;
//! - `mesh_identity_cert_refreshes_total{identity}`: certificates loaded (first one included);
//! - `mesh_authz_total{decision}`: inbound connection decisions (`allow`, `deny`, `error`).

use std::{sync::LazyLock, time::SystemTime};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use super::credentials::unix_seconds;
use crate::telemetry::metrics::with_registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabels {
    identity: String,
}

/// Labels of `mesh_authz_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

struct Metrics {
    expiry: Family<IdentityLabels, Gauge>,
    refreshes: Family<IdentityLabels, Counter>,
    authz: Family<DecisionLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let metrics = Metrics {
        expiry: Family::default(),
        refreshes: Family::default(),
        authz: Family::default(),
    };
    with_registry(|registry| {
        registry.register(
            "mesh_identity_cert_expiry_timestamp_seconds",
            "When the Connect leaf certificate in force expires (unix seconds)",
            metrics.expiry.clone(),
        );
        registry.register(
            "mesh_identity_cert_refreshes",
            "Connect certificates loaded from the agent (the first one included)",
            metrics.refreshes.clone(),
        );
        registry.register(
            "mesh_authz",
            "Inbound connections authorized by intentions, by decision (allow, deny, error)",
            metrics.authz.clone(),
        );
    });
    metrics
});

/// A new leaf of `identity`, valid until `not_after`, is in force.
pub(crate) fn identity_loaded(identity: &str, not_after: SystemTime) {
    let labels = IdentityLabels {
        identity: identity.to_owned(),
    };
    METRICS
        .expiry
        .get_or_create(&labels)
        .set(i64::try_from(unix_seconds(not_after)).unwrap_or(i64::MAX));
    METRICS.refreshes.get_or_create(&labels).inc();
}

/// One authorization decision: `allow`, `deny` or `error`.
pub(crate) fn authz_decision(decision: &'static str) {
    METRICS
        .authz
        .get_or_create(&DecisionLabels { decision })
        .inc();
}
