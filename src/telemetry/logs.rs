//! Logs: human-readable lines by default, one JSON object per line with
//! `--log-format json`; `RUST_LOG` filters (default `info`).
//!
//! Every line logged inside an RPC carries the RPC's trace id: in text as a
//! field of the `grpc.server` span (`grpc.server{rpc.service=… trace_id=…}:`),
//! in JSON as a top-level `trace_id` field. The RPC spans (target
//! [`RPC_TARGET`]) stay enabled whatever `RUST_LOG` says, so that a
//! `RUST_LOG=warn` warning still says which trace it belongs to.

use std::fmt;

use tracing::{
    field::{Field, Visit},
    span, Subscriber,
};
use tracing_subscriber::{
    field::{RecordFields, VisitOutput},
    filter::{filter_fn, EnvFilter},
    fmt::{
        format::{DefaultVisitor, Format, Json, JsonFields, Writer},
        time::SystemTime,
        FmtContext, FormatEvent, FormatFields,
    },
    layer::Context,
    registry::LookupSpan,
    Layer,
};

pub use super::traces::RPC_TARGET;
use crate::config::LogFormat;

/// `RUST_LOG` (default `info`), plus the RPC spans.
fn directives() -> String {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    format!("{base},{RPC_TARGET}=info")
}

fn env_filter(directives: &str) -> EnvFilter {
    EnvFilter::try_new(directives).unwrap_or_else(|error| {
        eprintln!("ignoring an invalid RUST_LOG ({error}); logging at info");
        EnvFilter::new(format!("info,{RPC_TARGET}=info"))
    })
}

/// The filter of the OpenTelemetry layer: what is logged, minus the HTTP
/// machinery (whose spans would also describe the OTLP export itself) and the
/// Consul client's internals (a trace per registration call says nothing).
pub(crate) fn trace_filter() -> EnvFilter {
    env_filter(&format!(
        "{},h2=off,hyper=off,hyper_util=off,reqwest=off,tonic::transport=off,tower=off,consulrs=off,rustify=off",
        directives()
    ))
}

/// The log layer for `format`, with its own `RUST_LOG` filter.
pub fn layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter = env_filter(&directives());
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .fmt_fields(TextFields)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => json_layer(std::io::stderr, filter),
    }
}

/// A JSON log layer writing to `writer` (public for tests of the format).
pub fn json_layer<S, W>(writer: W, filter: EnvFilter) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let format = tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false);
    let trace_ids = TraceIdLayer.with_filter(filter_fn(|metadata| {
        metadata.is_span() && metadata.fields().field("trace_id").is_some()
    }));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(writer)
        .event_format(JsonWithTraceId(format))
        .with_filter(filter);
    trace_ids.and_then(json).boxed()
}

/// Text fields without the OpenTelemetry plumbing (`otel.*`, `rpc.system`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Skipping(DefaultVisitor::new(writer, true));
        fields.record(&mut visitor);
        visitor.0.finish()
    }
}

struct Skipping<'a>(DefaultVisitor<'a>);

fn shown(field: &Field) -> bool {
    let name = field.name();
    !name.starts_with("otel.") && name != "rpc.system"
}

impl Visit for Skipping<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if shown(field) {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if shown(field) {
            self.0.record_error(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if shown(field) {
            self.0.record_debug(field, value);
        }
    }
}

/// The trace id a span's `trace_id` field holds (a span extension).
#[derive(Debug, Clone)]
struct TraceId(String);

/// Keeps the `trace_id` field of spans that have one as an extension, where
/// the JSON formatter finds it.
struct TraceIdLayer;

struct FindTraceId(Option<String>);

impl Visit for FindTraceId {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "trace_id" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "trace_id" {
            // Display values arrive here; their Debug is their Display.
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl TraceIdLayer {
    fn keep<S>(id: &span::Id, ctx: &Context<'_, S>, found: FindTraceId)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if let (Some(trace_id), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().replace(TraceId(trace_id));
        }
    }
}

impl<S> Layer<S> for TraceIdLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut found = FindTraceId(None);
        attrs.record(&mut found);
        Self::keep(id, &ctx, found);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let mut found = FindTraceId(None);
        values.record(&mut found);
        Self::keep(id, &ctx, found);
    }
}

/// tracing-subscriber's JSON lines with the innermost `trace_id` of the
/// event's spans as a top-level field.
struct JsonWithTraceId(Format<Json, SystemTime>);

impl<S> FormatEvent<S, JsonFields> for JsonWithTraceId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let trace_id = ctx.event_scope().and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<TraceId>().cloned())
        });
        let Some(TraceId(trace_id)) = trace_id else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) if is_hex(&trace_id) => {
                let separator = if rest.starts_with('}') { "" } else { "," };
                write!(writer, "{{\"trace_id\":\"{trace_id}\"{separator}{rest}")
            }
            _ => writer.write_str(&line),
        }
    }
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn json_lines_inside_a_request_carry_the_trace_id_at_top_level() {
        let buffer = Buffer::default();
        let subscriber =
            tracing_subscriber::registry().with(json_layer(buffer.clone(), EnvFilter::new("info")));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let rpc = tracing::info_span!(target: "mesh::rpc", "grpc.server", otel.kind = "server", trace_id = tracing::field::Empty);
            rpc.record("trace_id", tracing::field::display(TRACE_ID));
            let _rpc = rpc.enter();
            let client = tracing::info_span!("grpc.client", rpc.method = "GetUser");
            let _client = client.enter();
            tracing::info!(user = "u1", "inside");
        });
        let lines = buffer.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let outside: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert!(outside.get("trace_id").is_none(), "{outside}");
        assert_eq!(outside["message"], "outside");
        let inside: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(inside["trace_id"], TRACE_ID, "{inside}");
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["user"], "u1");
        assert_eq!(inside["span"]["name"], "grpc.client");
    }

    #[test]
    fn text_lines_show_the_trace_id_as_a_span_field_without_otel_plumbing() {
        let buffer = Buffer::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .fmt_fields(TextFields);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let rpc = tracing::info_span!(
                "grpc.server",
                otel.name = "mesh.users.v1.Users/GetUser",
                rpc.system = "grpc",
                rpc.method = "GetUser",
                trace_id = tracing::field::Empty
            );
            rpc.record("trace_id", tracing::field::display(TRACE_ID));
            let _rpc = rpc.enter();
            tracing::warn!(error = "boom", "inside");
        });
        let lines = buffer.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(
            line.contains(&format!(
                "grpc.server{{rpc.method=\"GetUser\" trace_id={TRACE_ID}}}: "
            )),
            "{line}"
        );
        assert!(line.contains("inside error=\"boom\""), "{line}");
        assert!(!line.contains("otel."), "{line}");
    }
}
