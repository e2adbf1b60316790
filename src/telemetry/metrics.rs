//! Metrics: the process's one Prometheus registry (`prometheus-client`, the
//! official OpenMetrics client), served at `GET /metrics` on `--metrics-listen`.
//!
//! What is in it:
//! - the server's RED metrics per method, kept by the server's observe layer:
//!   `grpc_server_started_total`, `grpc_server_handled_total` (with
//!   `grpc_code` = `OK`, `NOT_FOUND`, …) and the `grpc_server_handling_seconds`
//!   histogram, labelled `grpc_service`, `grpc_method`;
//! - the mesh client's per-target metrics (`mesh_client_*`), read from the
//!   client's own counters and Consul watches at scrape time;
//! - what services add with [`register_counter_fn`], [`register_gauge_fn`] or
//!   [`with_registry`].
//!
//! The body follows the scraper's `Accept` header: OpenMetrics for
//! Prometheus, the classic text format (0.0.4) otherwise.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock, Mutex, MutexGuard},
};

use axum::{http::header, response::IntoResponse, routing::get, Router};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
        MetricType,
    },
    registry::{Registry, Unit},
};
use tokio::net::TcpListener;

pub use prometheus_client;

/// `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `f` with the process's registry, to register any `prometheus-client`
/// metric or collector (re-exported as [`prometheus_client`], so callers need
/// no dependency of their own). Register once, at startup: metric names must
/// be unique in the process.
pub fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(&mut registry())
}

/// The process's metrics in the Prometheus text format (version 0.0.4).
pub fn encode_text() -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry())
        .expect("encoding into a String cannot fail");
    text
}

/// The process's metrics in the OpenMetrics text format.
pub fn encode_openmetrics() -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry())
        .expect("encoding into a String cannot fail");
    text
}

/// Serves `GET /metrics` on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let router = Router::new().route("/metrics", get(scrape));
    axum::serve(listener, router).await
}

async fn scrape(headers: axum::http::HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    // Encoding walks every family under the registry lock: off the async workers.
    let encoded = tokio::task::spawn_blocking(move || {
        if openmetrics {
            (OPENMETRICS_CONTENT_TYPE, encode_openmetrics())
        } else {
            (
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                encode_text(),
            )
        }
    })
    .await;
    match encoded {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Exposes a counter kept elsewhere (an `AtomicU64`, say) as
/// `<name>_total{labels}`, read by `read` at every scrape. `name` may be
/// given with or without its `_total` suffix; calls with the same name add
/// label sets to one family (the first call's `help` describes it).
///
/// ```no_run
/// use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
/// let created = Arc::new(AtomicU64::new(0));
/// let counter = created.clone();
/// mesh::telemetry::metrics::register_counter_fn(
///     "payments_charges_total",
///     "Charge calls answered, by outcome",
///     &[("outcome", "created")],
///     move || counter.load(Ordering::Relaxed),
/// );
/// ```
pub fn register_counter_fn(
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    read: impl Fn() -> u64 + Send + Sync + 'static,
) {
    let name = name.strip_suffix("_total").unwrap_or(name);
    FnMetrics::add(
        name,
        help,
        MetricType::Counter,
        labels,
        Read::Counter(Box::new(read)),
    );
}

/// Exposes a gauge kept elsewhere as `<name>{labels}`, read by `read` at
/// every scrape (see [`register_counter_fn`]).
pub fn register_gauge_fn(
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    read: impl Fn() -> i64 + Send + Sync + 'static,
) {
    FnMetrics::add(
        name,
        help,
        MetricType::Gauge,
        labels,
        Read::Gauge(Box::new(read)),
    );
}

enum Read {
    Counter(Box<dyn Fn() -> u64 + Send + Sync>),
    Gauge(Box<dyn Fn() -> i64 + Send + Sync>),
}

struct FnFamily {
    help: String,
    metric_type: MetricType,
    series: Vec<(Vec<(String, String)>, Read)>,
}

/// The families of [`register_counter_fn`] and [`register_gauge_fn`]: one
/// collector, registered on first use.
#[derive(Default)]
struct FnMetrics {
    families: Mutex<BTreeMap<String, FnFamily>>,
}

static FN_METRICS: LazyLock<Arc<FnMetrics>> = LazyLock::new(|| {
    let metrics = Arc::new(FnMetrics::default());
    registry().register_collector(Box::new(metrics.clone()));
    metrics
});

impl std::fmt::Debug for FnMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnMetrics").finish_non_exhaustive()
    }
}

impl FnMetrics {
    fn add(name: &str, help: &str, metric_type: MetricType, labels: &[(&str, &str)], read: Read) {
        let labels = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let mut families = FN_METRICS
            .families
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name.to_owned()).or_insert_with(|| FnFamily {
            help: help.to_owned(),
            metric_type,
            series: Vec::new(),
        });
        assert!(
            family.metric_type == metric_type,
            "metric {name} registered both as a counter and as a gauge"
        );
        family.series.retain(|(existing, _)| existing != &labels);
        family.series.push((labels, read));
    }
}

impl Collector for FnMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for (name, family) in families.iter() {
            let mut metric =
                encoder.encode_descriptor(name, &family.help, None, family.metric_type)?;
            for (labels, read) in &family.series {
                let series = metric.encode_family(labels)?;
                match read {
                    Read::Counter(read) => ConstCounter::new(read()).encode(series)?,
                    Read::Gauge(read) => ConstGauge::new(read()).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

/// `grpc_service`, `grpc_method`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    pub(crate) grpc_service: String,
    pub(crate) grpc_method: String,
}

/// `grpc_service`, `grpc_method`, `grpc_code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HandledLabels {
    pub(crate) grpc_service: String,
    pub(crate) grpc_method: String,
    pub(crate) grpc_code: &'static str,
}

/// Handling-time buckets, in seconds: 0.5 ms … 10 s.
const HANDLING_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn handling_histogram() -> Histogram {
    Histogram::new(HANDLING_BUCKETS)
}

/// The server's RED families (go-grpc-prometheus names).
#[derive(Clone, Debug)]
pub(crate) struct ServerMetrics {
    pub(crate) started: Family<MethodLabels, Counter>,
    pub(crate) handled: Family<HandledLabels, Counter>,
    pub(crate) handling: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl ServerMetrics {
    /// The families, registered in `registry`.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(handling_histogram),
        };
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, by gRPC status code",
            metrics.handled.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Time from receiving an RPC to sending its status",
            Unit::Seconds,
            metrics.handling.clone(),
        );
        metrics
    }

    /// The process's families (registered on first use).
    pub(crate) fn global() -> Self {
        static SERVER: LazyLock<ServerMetrics> =
            LazyLock::new(|| ServerMetrics::new(&mut registry()));
        SERVER.clone()
    }
}

/// `target`, `endpoint`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabels {
    pub(crate) target: String,
    pub(crate) endpoint: String,
}

/// `mesh_client_endpoint_requests_total{target,endpoint}`: attempts sent to
/// each endpoint (registered on first use).
pub(crate) fn endpoint_requests() -> Family<EndpointLabels, Counter> {
    static FAMILY: LazyLock<Family<EndpointLabels, Counter>> = LazyLock::new(|| {
        let family = Family::default();
        registry().register(
            "mesh_client_endpoint_requests",
            "Attempts the mesh client sent to each endpoint of a target service",
            family.clone(),
        );
        family
    });
    FAMILY.clone()
}

/// Registers a collector in the process's registry.
pub(crate) fn register_collector(collector: Box<dyn Collector>) {
    registry().register_collector(collector);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn function_counters_are_read_at_scrape_time() {
        let value = Arc::new(AtomicU64::new(3));
        let read = value.clone();
        register_counter_fn(
            "test_fn_things_total",
            "Things.",
            &[("outcome", "a")],
            move || read.load(Ordering::Relaxed),
        );
        register_counter_fn("test_fn_things", "Things.", &[("outcome", "b")], || 7);
        register_gauge_fn("test_fn_level", "A level.", &[], || -2);
        value.store(5, Ordering::Relaxed);
        let text = encode_text();
        assert!(
            text.contains("test_fn_things_total{outcome=\"a\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("test_fn_things_total{outcome=\"b\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE test_fn_things_total counter\n"),
            "{text}"
        );
        assert!(text.contains("test_fn_level -2\n"), "{text}");
        let openmetrics = encode_openmetrics();
        assert!(
            openmetrics.contains("# TYPE test_fn_things counter\n"),
            "{openmetrics}"
        );
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    }
}
