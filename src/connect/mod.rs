//! Consul Connect-native mTLS: SPIFFE identities issued by the local Consul
//! agent, rotated live, and the rustls configurations of the mesh's servers
//! and clients (see `docs/adr/` on Connect-native mTLS).
//!
//! - [`Identity`]: a service's live credentials (roots + leaf watch);
//! - [`SpiffeId`]: `spiffe://<trust domain>/ns/<ns>/dc/<dc>/svc/<service>`.
//!
//! Whether it is used at all is [`crate::config::MtlsMode`].

mod credentials;
mod identity;
pub(crate) mod metrics;
mod spiffe;
mod tls;

pub use credentials::{inspect, Credentials, CredentialsError, PeerCertificate};
pub use identity::{CurrentIdentity, Identity, IdentityError, IdentityUpdater};
pub use spiffe::{NotAServiceIdentity, SpiffeId};
pub use tls::WrongPeerIdentity;

/// The Connect identity people and tools present (grpcurl, `mesh up`'s demo
/// seeding, `mesh-bench`): the intentions the project ships let it call every
/// service.
pub const OPERATOR: &str = "operator";

/// The verified Connect identity of the caller, put in every request's
/// extensions by the mTLS server (handlers read it with
/// `request.extensions().get::<PeerIdentity>()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The caller's SPIFFE ID.
    pub identity: SpiffeId,
    /// Its certificate's serial (colon hex).
    pub serial: String,
}
