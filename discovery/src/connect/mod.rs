//! Consul Connect's CA as seen through the local agent: the trust roots, a
//! service's leaf certificate (both as blocking queries), the authorization of
//! an inbound connection, and intentions.
//!
//! Everything goes through the crate's one Consul HTTP client, so the token,
//! timeouts and blocking-query rules are those of the health watch.

mod api;
mod intentions;
mod watch;

pub use api::{Authorization, CaRoot, CaRoots, ConnectCa, Indexed, LeafCert};
pub use intentions::{Intention, IntentionAction};
pub use watch::{CaWatch, CaWatchOptions, CaWatchState};
