//! HTTP server metrics with OpenTelemetry's semantic-convention names, in
//! the process's Prometheus registry: the histogram
//! `http_server_request_duration_seconds` (`http.server.request.duration`)
//! labelled `http_request_method`, `http_route` and
//! `http_response_status_code`, with OTel's recommended buckets.

use mesh::telemetry::metrics::prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::Histogram},
};

/// OpenTelemetry's default buckets for `http.server.request.duration` (s).
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The labels of one series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HttpLabels {
    /// `GET`, `POST`… (`_OTHER` for any other method, as OTel says).
    pub http_request_method: String,
    /// The route template, or empty when none matched.
    pub http_route: String,
    /// The response's status.
    pub http_response_status_code: u16,
}

type Durations = Family<HttpLabels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The gateway's HTTP metrics.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    durations: Durations,
}

impl HttpMetrics {
    /// Registers the family in the process's registry (once per process).
    pub fn register() -> Self {
        let durations: Durations = Family::new_with_constructor(histogram);
        mesh::telemetry::metrics::with_registry(|registry| {
            registry.register(
                "http_server_request_duration_seconds",
                "Duration of HTTP server requests (OpenTelemetry http.server.request.duration)",
                durations.clone(),
            );
        });
        Self { durations }
    }

    /// Records one request.
    pub fn record(&self, method: &http::Method, route: &str, status: u16, seconds: f64) {
        let labels = HttpLabels {
            http_request_method: method_label(method).to_owned(),
            http_route: route.to_owned(),
            http_response_status_code: status,
        };
        self.durations.get_or_create(&labels).observe(seconds);
    }
}

/// The method as OTel's `http.request.method`: the known methods, else `_OTHER`.
pub fn method_label(method: &http::Method) -> &str {
    match *method {
        http::Method::GET
        | http::Method::POST
        | http::Method::PUT
        | http::Method::DELETE
        | http::Method::PATCH
        | http::Method::HEAD
        | http::Method::OPTIONS
        | http::Method::CONNECT
        | http::Method::TRACE => method.as_str(),
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
    }
}
