//! Why a service could not start, or stopped with an error: the one error
//! type of the server bootstrap (a service's `run` returns it too).

use std::{net::SocketAddr, time::Duration};

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Storage could not be opened.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The Consul settings are invalid.
    #[error("invalid Consul settings: {0}")]
    Consul(#[from] discovery::ConfigError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// `--mtls=required` with `--no-consul`: no agent, so no Connect certificate.
    #[error("--mtls=required needs the Consul agent's Connect CA, but --no-consul is set: add --mtls=off (plaintext, local experiments only) or drop --no-consul")]
    MtlsNeedsConsul,
    /// `--authz-max-stale` shorter than `--authz-recheck`: every decision
    /// would be too old before its re-check.
    #[error("--authz-max-stale ({max_stale:?}) must be at least --authz-recheck ({recheck:?}): a decision is re-checked once per period")]
    MaxStaleBelowRecheck {
        /// `--authz-max-stale`.
        max_stale: Duration,
        /// `--authz-recheck`.
        recheck: Duration,
    },
    /// The mesh port's accept loop ended without being asked to.
    #[error("the mesh port stopped accepting connections on its own")]
    Stopped,
    /// The service has no gRPC service of its own (an edge): `serve` serves
    /// gRPC services only; an edge uses `serve_edge`.
    #[error("{service} serves no gRPC service of its own (an edge service): serve it with BoundServer::serve_edge")]
    NotGrpc {
        /// The service's name.
        service: &'static str,
    },
    /// The service's own settings cannot be used (its files, its flags).
    #[error(transparent)]
    Settings(Box<dyn std::error::Error + Send + Sync>),
}
