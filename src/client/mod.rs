//! The mesh client (DESIGN §4): what generated tonic clients send through.
//!
//! [`Channel`] is the one type every caller holds: a cloneable, boxed gRPC
//! transport. [`direct`] makes one from a plain tonic channel; the mesh's
//! resolving, balancing, retrying stack produces the same type, so code such
//! as `orders` does not change with the transport under it.

use tonic::body::Body;
use tower::{util::BoxCloneSyncService, BoxError, ServiceExt};

/// A gRPC transport that generated clients accept (`UsersClient::new(channel)`).
pub type Channel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// Wraps a plain tonic channel (one address, no balancing, no retries): the
/// `--via direct` baseline of the benchmarks, and a building block of tests.
pub fn direct(channel: tonic::transport::Channel) -> Channel {
    BoxCloneSyncService::new(channel.map_err(BoxError::from))
}
