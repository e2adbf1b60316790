//! Traces: the OpenTelemetry pipeline behind `tracing` spans, and W3C trace
//! context in gRPC metadata.
//!
//! Every RPC is a `tracing` span (target `mesh::rpc`): `grpc.server` opened by
//! the server's observe layer, `grpc.client` by the mesh client. The
//! `tracing-opentelemetry` layer turns them into OTel spans named
//! `package.Service/Method`, with the semantic-convention attributes
//! `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code` (and on
//! the client `server.address`, `server.port` and
//! `rpc.grpc.previous_rpc_attempts`, the retries of the call).
//!
//! The pipeline always assigns trace ids (so that logs carry them and
//! `traceparent` travels on), and exports only when an OTLP endpoint is
//! configured: in batches (`OTEL_BSP_*` tune them) over gRPC with the
//! project's own tonic, from a small runtime of its own so that it works
//! whether or not `init` runs inside the service's runtime. Without an
//! endpoint no span is recorded (sampler `always_off`, unless
//! `OTEL_TRACES_SAMPLER` names another): the ids are still made and
//! continued, and the `traceparent` passed on has its sampled flag off, which
//! says what happened — this hop recorded nothing.

use std::time::Duration;

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
    Context, KeyValue,
};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracer, SdkTracerProvider},
    Resource,
};

use crate::{config::ServiceArgs, service::ServiceIdentity};

/// The target of the RPC spans (and of nothing else), so that filters can
/// keep them whatever `RUST_LOG` says.
pub const RPC_TARGET: &str = "mesh::rpc";

/// How long [`crate::telemetry::Telemetry::shutdown`] waits for the last export.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the trace pipeline is built from.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `--otlp-endpoint` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub(crate) endpoint: Option<String>,
    /// Export is on (an endpoint is set and the SDK is not disabled).
    pub(crate) export: bool,
    /// `service.name`.
    pub(crate) service_name: String,
    /// `service.instance.id`.
    pub(crate) instance_id: String,
}

impl Settings {
    pub(crate) fn from_args(identity: &ServiceIdentity, args: &ServiceArgs) -> Self {
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        };
        let endpoint = args
            .otlp_endpoint
            .clone()
            .filter(|value| !value.trim().is_empty());
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let export = !disabled
            && (endpoint.is_some() || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some());
        let service_name = args
            .otel_service_name
            .clone()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| identity.name.to_owned());
        // The same id the server registers in Consul when it is known before
        // binding (explicit, or the listen port is fixed).
        let port = args
            .listen
            .map(|address| address.port())
            .unwrap_or(identity.default_port);
        let instance_id = match (&args.instance_id, port) {
            (Some(id), _) if !id.is_empty() => id.clone(),
            (_, 0) => format!("{}-pid{}", identity.name, std::process::id()),
            _ => crate::service::instance_id(None, port),
        };
        Self {
            endpoint,
            export,
            service_name,
            instance_id,
        }
    }
}

/// The tracer provider and, when exporting, the runtime its exporter runs on.
pub(crate) struct Pipeline {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("exporting", &self.exporting())
            .finish()
    }
}

impl Pipeline {
    /// The pipeline `settings` ask for.
    pub(crate) fn start(settings: &Settings) -> Result<Self, Box<dyn std::error::Error>> {
        if !settings.export {
            return Ok(Self::local(settings));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        let exporter = {
            // tonic's channel spawns its connection tasks on the current runtime.
            let _guard = runtime.enter();
            let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            let builder = match &settings.endpoint {
                // A traces-specific endpoint in the environment wins (OTel spec).
                Some(endpoint)
                    if std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() =>
                {
                    use opentelemetry_otlp::WithExportConfig;
                    builder.with_endpoint(endpoint.clone())
                }
                _ => builder,
            };
            builder.build()?
        };
        let provider = SdkTracerProvider::builder()
            .with_resource(resource(settings))
            .with_batch_exporter(exporter)
            .build();
        Ok(Self {
            provider,
            runtime: Some(runtime),
        })
    }

    /// Ids and propagation without export. No span is recorded: attributes,
    /// events and the finished span would be built for nobody (8–12 % of an
    /// order's CPU, docs/BENCHMARKS.md run 10). `OTEL_TRACES_SAMPLER`, when
    /// set, still chooses.
    pub(crate) fn local(settings: &Settings) -> Self {
        let builder = SdkTracerProvider::builder().with_resource(resource(settings));
        let builder = if sampler_chosen_by_environment() {
            builder
        } else {
            builder.with_sampler(Sampler::AlwaysOff)
        };
        Self {
            provider: builder.build(),
            runtime: None,
        }
    }

    pub(crate) fn exporting(&self) -> bool {
        self.runtime.is_some()
    }

    pub(crate) fn tracer(&self) -> SdkTracer {
        self.provider.tracer("mesh")
    }

    /// Flushes and stops the exporter, then its runtime.
    pub(crate) fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                eprintln!("telemetry: flushing the last spans failed: {error}");
            }
            // Allowed anywhere, also inside another runtime.
            runtime.shutdown_background();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the user named a sampler (`OTEL_TRACES_SAMPLER`), which the SDK
/// then reads.
fn sampler_chosen_by_environment() -> bool {
    std::env::var_os("OTEL_TRACES_SAMPLER").is_some_and(|value| !value.is_empty())
}

fn resource(settings: &Settings) -> Resource {
    Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", settings.instance_id.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build()
}

/// Makes W3C trace context the process's global propagator (for code that
/// uses OpenTelemetry's global API).
pub(crate) fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// The remote parent in `headers` (`traceparent`, `tracestate`), or an empty
/// context when there is none.
pub fn extract(headers: &http::HeaderMap) -> Context {
    if !headers.contains_key("traceparent") {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes `cx`'s span as `traceparent` (and `tracestate`) into `headers`;
/// nothing when `cx` has no valid span.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt;
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
    }
}

/// `cx`'s span as the values [`inject`] writes (`traceparent`, and
/// `tracestate`, empty when the span has none), without a carrier: for code
/// that stores them, as the orders outbox does with every event (a header
/// map and a propagator per event cost it 4–5 µs).
pub fn w3c_context(cx: &Context) -> Option<(String, String)> {
    use opentelemetry::trace::{TraceContextExt, TraceFlags};
    let span = cx.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            format!(
                "00-{}-{}-{:02x}",
                span_context.trace_id(),
                span_context.span_id(),
                span_context.trace_flags() & TraceFlags::SAMPLED
            ),
            span_context.trace_state().header(),
        )
    })
}

/// The trace id of `span` as 32 hex digits, when the OpenTelemetry layer is
/// installed and gave it one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    #[test]
    fn traceparent_round_trips_through_headers() {
        let span_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(span_context.clone());
        let mut headers = http::HeaderMap::new();
        inject(&cx, &mut headers);
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let extracted = extract(&headers);
        assert_eq!(extracted.span().span_context(), &span_context);

        let mut empty = http::HeaderMap::new();
        inject(&Context::new(), &mut empty);
        assert_eq!(w3c_context(&Context::new()), None);
        assert!(empty.is_empty());
        assert!(!extract(&empty).span().span_context().is_valid());
    }

    #[test]
    fn the_stored_trace_context_is_what_the_propagator_writes() {
        for (flags, state) in [
            (TraceFlags::SAMPLED, TraceState::default()),
            (TraceFlags::default(), TraceState::default()),
            (
                TraceFlags::SAMPLED,
                TraceState::from_key_value([("vendor", "value"), ("other", "x")]).unwrap(),
            ),
        ] {
            let span_context = SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("b7ad6b7169203331").unwrap(),
                flags,
                true,
                state,
            );
            let cx = Context::new().with_remote_span_context(span_context);
            let mut headers = http::HeaderMap::new();
            inject(&cx, &mut headers);
            let (traceparent, tracestate) = w3c_context(&cx).expect("a valid span");
            assert_eq!(headers["traceparent"], traceparent.as_str());
            assert_eq!(headers["tracestate"], tracestate.as_str());
        }
    }

    /// Without an exporter a span records nothing, yet it continues the
    /// caller's trace, names a trace of its own when it has no caller, and
    /// passes `traceparent` on (sampled flag off: nothing was recorded).
    #[test]
    fn a_local_pipeline_makes_and_continues_ids_without_recording() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        use tracing_subscriber::layer::SubscriberExt;
        assert!(
            !sampler_chosen_by_environment(),
            "this test needs OTEL_TRACES_SAMPLER unset"
        );
        let settings = Settings {
            endpoint: None,
            export: false,
            service_name: "users".into(),
            instance_id: "users-1".into(),
        };
        let pipeline = Pipeline::local(&settings);
        let subscriber = tracing_subscriber::registry().with(
            tracing_opentelemetry::layer()
                .with_tracer(pipeline.tracer())
                .with_context_activation(false),
        );
        tracing::subscriber::with_default(subscriber, || {
            let mut incoming = http::HeaderMap::new();
            incoming.insert(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                    .parse()
                    .unwrap(),
            );
            let server = tracing::info_span!("grpc.server");
            let _ = server.set_parent(extract(&incoming));
            assert!(!server.context().span().is_recording());
            assert_eq!(
                trace_id(&server).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            let client = server.in_scope(|| tracing::info_span!("grpc.client"));
            let mut outgoing = http::HeaderMap::new();
            inject(&client.context(), &mut outgoing);
            let traceparent = outgoing["traceparent"].to_str().unwrap();
            assert!(
                traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
                    && traceparent.ends_with("-00")
                    && !traceparent.contains("00f067aa0ba902b7"),
                "{traceparent}"
            );

            let root = tracing::info_span!("grpc.client");
            let root_trace = trace_id(&root).expect("a root span gets a trace id");
            assert_eq!(root_trace.len(), 32);
            assert_ne!(root_trace, "4bf92f3577b34da6a3ce929d0e0e4736");
        });
    }
}

/// In-process span capture for unit tests: a subscriber whose OpenTelemetry
/// layer exports finished spans into a list.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::{
        error::OTelSdkResult,
        trace::{SdkTracerProvider, SpanData, SpanExporter},
    };
    use tracing_subscriber::layer::SubscriberExt;

    /// The finished spans.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<SpanData>>>);

    impl Captured {
        pub(crate) fn spans(&self) -> Vec<SpanData> {
            self.0.lock().unwrap().clone()
        }

        pub(crate) fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.clone())
        }
    }

    impl SpanExporter for Captured {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// A dispatcher with the OpenTelemetry layer and what it captures.
    pub(crate) fn capture() -> (tracing::Dispatch, Captured, SdkTracerProvider) {
        let captured = Captured::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(captured.clone())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // As `telemetry::init` sets it.
            .with_context_activation(false);
        let subscriber = tracing_subscriber::registry().with(layer);
        (tracing::Dispatch::new(subscriber), captured, provider)
    }
}
