//! Trace context across the broker (OpenTelemetry messaging conventions):
//! the publisher stores the W3C `traceparent` of the operation that caused
//! an event with the event; the consumer's span for the event continues
//! that trace, so one order's trace runs from PlaceOrder into shipping.

use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{envelope::Event, settings::BrokerKind};

/// `traceparent` and `tracestate` of the current span, if it is traced.
pub fn current_context() -> (Option<String>, Option<String>) {
    mesh::telemetry::traces::w3c_context(&tracing::Span::current().context())
        .map_or((None, None), |(traceparent, tracestate)| {
            (Some(traceparent), Some(tracestate))
        })
}

/// The span of processing `event` from `topic` in `group`, a child of the
/// event's trace context (a root when it has none).
pub fn process_span(event: &Event, broker: BrokerKind, topic: &str, group: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "messaging.process",
        otel.name = format!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = broker.as_str(),
        messaging.operation.type = "process",
        messaging.destination.name = topic,
        messaging.consumer.group.name = group,
        messaging.message.id = event.id.as_str(),
        cloudevents.event_type = event.event_type.as_str(),
        cloudevents.event_subject = event.subject.as_str(),
        trace_id = Empty,
    );
    if !span.is_disabled() {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("traceparent", &event.traceparent),
            ("tracestate", &event.tracestate),
        ] {
            if let Some(value) = value.as_deref().and_then(|value| value.parse().ok()) {
                headers.insert(name, value);
            }
        }
        let _ = span.set_parent(mesh::telemetry::traces::extract(&headers));
        if let Some(trace_id) = mesh::telemetry::traces::trace_id(&span) {
            span.record("trace_id", tracing::field::display(&trace_id));
        }
    }
    span
}
