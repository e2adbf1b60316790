//! What the gateway tells operators: one JSON [`access_log`] line per
//! request and OpenTelemetry-named HTTP [`metrics`]; spans are opened in
//! [`crate::app`] (continuing the caller's `traceparent` into the mesh).

pub mod access_log;
pub mod metrics;

pub use access_log::AccessLog;
pub use metrics::HttpMetrics;
