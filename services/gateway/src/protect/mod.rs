//! Protection at the edge: per-caller [`rate`] limits, the [`client_addr`]
//! behind trusted proxies, request [`deadline`]s. Body, header and URL
//! limits and the header read timeout are in [`crate::limits`] and the
//! HTTP server.

pub mod client_addr;
pub mod deadline;
pub mod rate;
