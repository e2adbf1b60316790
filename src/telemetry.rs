//! Logging (and, with OpenTelemetry configured, tracing export) for binaries.

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

use crate::config::{LogArgs, LogFormat};

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default
/// `info`), `--log-format` picks text or JSON. Call once, early in `main`.
pub fn init(log: &LogArgs) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match log.log_format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests that run several services in one process) keeps the first.
    let _ = result;
}
