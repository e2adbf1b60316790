//! Observability for every service binary (issue 6, `docs/adr/0006-observability.md`):
//!
//! - [`logs`]: human-readable lines by default, JSON with `--log-format json`;
//!   every line logged inside an RPC carries the RPC's `trace_id`;
//! - [`traces`]: one span per RPC on the server (`mesh::server`) and on the
//!   client (`mesh::client`), W3C `traceparent` in gRPC metadata, OTLP/gRPC
//!   export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set;
//! - [`metrics`]: the process's Prometheus registry, served on
//!   `--metrics-listen` at `GET /metrics`.
//!
//! A binary calls [`init`] first thing in `main` and [`Telemetry::shutdown`]
//! after its `run` returns, so that the last spans are flushed:
//!
//! ```no_run
//! # fn run() {}
//! # let identity = mesh::service::ServiceIdentity::grpc("users", "mesh.users.v1.Users", 50051);
//! # let args: mesh::config::ServiceArgs = todo!();
//! let telemetry = mesh::telemetry::init(&identity, &args);
//! run();
//! telemetry.shutdown();
//! ```

pub mod logs;
pub mod metrics;
pub mod traces;

use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};

use crate::{config::ServiceArgs, service::ServiceIdentity};

/// The installed telemetry of a process; [`Telemetry::shutdown`] (or drop)
/// flushes the spans not exported yet.
#[must_use = "call `shutdown()` after the service stops, or the last spans are lost"]
#[derive(Debug)]
pub struct Telemetry {
    traces: Option<traces::Pipeline>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.traces
            .as_ref()
            .is_some_and(traces::Pipeline::exporting)
    }

    /// Exports the spans still queued (bounded by the batch export timeout)
    /// and stops the exporter.
    pub fn shutdown(mut self) {
        self.flush_and_stop();
    }

    fn flush_and_stop(&mut self) {
        if let Some(pipeline) = self.traces.take() {
            pipeline.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

/// Installs the process's `tracing` subscriber — logs filtered by `RUST_LOG`
/// (default `info`) in the `--log-format`, and the OpenTelemetry layer that
/// turns RPC spans into OTel spans — and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (`--otlp-endpoint`) is set, a batching OTLP/gRPC exporter with resource
/// `service.name` (`OTEL_SERVICE_NAME`, default the service's name),
/// `service.instance.id` and `service.version`. Call once, early in `main`;
/// it needs no async runtime (the exporter runs on its own). A second call in
/// one process keeps the first subscriber.
pub fn init(identity: &ServiceIdentity, args: &ServiceArgs) -> Telemetry {
    let settings = traces::Settings::from_args(identity, args);
    let (pipeline, setup_error) = match traces::Pipeline::start(&settings) {
        Ok(pipeline) => (pipeline, None),
        Err(error) => (traces::Pipeline::local(&settings), Some(error)),
    };
    let otel = tracing_opentelemetry::layer()
        .with_tracer(pipeline.tracer())
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // No code reads OpenTelemetry's "current" context: the parent of a
        // span is the enclosing `tracing` span, and `traceparent` is written
        // from the span itself. Activating the OTel context on every enter
        // (every poll of an instrumented future) is work for nobody.
        .with_context_activation(false)
        .with_target(false)
        .with_filter(logs::trace_filter());
    let installed = tracing_subscriber::registry()
        .with(otel)
        .with(logs::layer(args.log.log_format))
        .try_init()
        .is_ok();
    if !installed {
        // Tests that run several services in one process keep the first subscriber.
        return Telemetry { traces: None };
    }
    traces::install_propagator();
    if let Some(error) = setup_error {
        tracing::error!(%error, "cannot start the OTLP exporter: spans are not exported");
    } else if pipeline.exporting() {
        for variable in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            match std::env::var(variable) {
                Ok(protocol) if !protocol.is_empty() && protocol != "grpc" => {
                    tracing::warn!(%variable, %protocol, "only OTLP over gRPC is supported: exporting with grpc");
                }
                _ => {}
            }
        }
        tracing::info!(
            endpoint = settings.endpoint.as_deref().unwrap_or("(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)"),
            service_name = %settings.service_name,
            instance = %settings.instance_id,
            "exporting traces over OTLP/gRPC"
        );
    }
    Telemetry {
        traces: Some(pipeline),
    }
}

/// The canonical name of a gRPC status code (`OK`, `NOT_FOUND`, …), as the
/// `grpc_code` label and in logs.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `grpc-status` of a header map (response headers of a trailers-only
/// answer, or trailers), if present and well-formed.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(tonic::Code::from)
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
pub(crate) fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_grpc_paths() {
        assert_eq!(
            split_path("/mesh.users.v1.Users/GetUser"),
            Some(("mesh.users.v1.Users", "GetUser"))
        );
        assert_eq!(split_path("/nope"), None);
        assert_eq!(split_path("//x"), None);
        assert_eq!(split_path("/a/b/c"), None);
    }

    #[test]
    fn names_codes_canonically() {
        assert_eq!(grpc_code_name(tonic::Code::Ok), "OK");
        assert_eq!(grpc_code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(grpc_code_name(tonic::Code::from(14)), "UNAVAILABLE");
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(grpc_status(&headers), Some(tonic::Code::NotFound));
    }
}
