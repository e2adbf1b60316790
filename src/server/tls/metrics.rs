//! The mesh port's connection metrics, on the process's registry:
//! - `mesh_connections_refused_total{reason}`: connections closed before
//!   they were served, by [`Refused`] reason;
//! - `mesh_connections_pending_handshakes`: connections accepted whose TLS
//!   handshake has not completed yet.

use std::sync::LazyLock;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::telemetry::metrics::with_registry;

/// Why the mesh port closed a connection without serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Pushed out by newer unauthenticated connections (`--max-pending-handshakes`).
    TooManyPending,
    /// No completed handshake within `--handshake-timeout`.
    HandshakeTimeout,
    /// The TLS handshake failed (no or an untrusted client certificate…).
    TlsHandshake,
    /// A plaintext client, answered UNAUTHENTICATED.
    Plaintext,
    /// This server has no usable leaf certificate.
    NoServerCertificate,
    /// The client certificate carries no single Connect service identity.
    NoClientIdentity,
    /// The caller belongs to another trust domain.
    ForeignTrustDomain,
    /// The client certificate has expired.
    ExpiredCertificate,
    /// The intentions deny the caller, or its decision could not be confirmed.
    NotAuthorized,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::TooManyPending => "too_many_pending",
            Refused::HandshakeTimeout => "handshake_timeout",
            Refused::TlsHandshake => "tls_handshake",
            Refused::Plaintext => "plaintext",
            Refused::NoServerCertificate => "no_server_certificate",
            Refused::NoClientIdentity => "no_client_identity",
            Refused::ForeignTrustDomain => "foreign_trust_domain",
            Refused::ExpiredCertificate => "expired_certificate",
            Refused::NotAuthorized => "not_authorized",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

struct Metrics {
    refused: Family<ReasonLabels, Counter>,
    pending: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let metrics = Metrics {
        refused: Family::default(),
        pending: Gauge::default(),
    };
    with_registry(|registry| {
        registry.register(
            "mesh_connections_refused",
            "Connections the mesh port closed without serving them, by reason",
            metrics.refused.clone(),
        );
        registry.register(
            "mesh_connections_pending_handshakes",
            "Connections accepted by the mesh port whose TLS handshake has not completed",
            metrics.pending.clone(),
        );
    });
    metrics
});

/// One connection refused for `reason`.
pub(crate) fn refused(reason: Refused) {
    METRICS
        .refused
        .get_or_create(&ReasonLabels {
            reason: reason.label(),
        })
        .inc();
}

/// A connection started waiting for its handshake.
pub(super) fn pending_handshake_started() {
    METRICS.pending.inc();
}

/// A connection stopped waiting for its handshake.
pub(super) fn pending_handshake_done() {
    METRICS.pending.dec();
}
