//! Reading a service's Prometheus metrics for `mesh status`: from the
//! metrics port an instance registers in Consul (`Meta.metrics_port`), over
//! plain HTTP (no identity needed: the same read-only view as the table).

use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::consul::{model::HealthEntry, ConsulApi};

/// How long one metrics read may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The parsed `/metrics` of every passing instance of `service` that
/// answers; `None` when no instance passes.
pub(super) async fn passing(
    api: &ConsulApi,
    service: &str,
) -> Option<Vec<prometheus_parse::Scrape>> {
    let entries = api.health(service, true).await.ok()?;
    if entries.is_empty() {
        return None;
    }
    let mut scrapes = Vec::new();
    for entry in &entries {
        let Some(address) = metrics_address(entry) else {
            continue;
        };
        if let Ok(Ok(scrape)) = tokio::time::timeout(SCRAPE_TIMEOUT, read(&address)).await {
            scrapes.push(scrape);
        }
    }
    Some(scrapes)
}

/// `host:port` of the instance's metrics endpoint, from `Meta.metrics_port`.
fn metrics_address(entry: &HealthEntry) -> Option<String> {
    let port: u16 = entry.meta("metrics_port")?.parse().ok()?;
    let service = entry.socket_address();
    let host = service.rsplit_once(':')?.0;
    Some(format!("{host}:{port}"))
}

async fn read(address: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{address}/metrics").parse()?;
    let response = client.get(uri).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET /metrics: {}",
        response.status()
    );
    let body = response.into_body().collect().await?.to_bytes();
    parse(&String::from_utf8_lossy(&body))
}

/// Parses the text of a `/metrics` scrape.
pub(super) fn parse(text: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines).context("parse /metrics")
}

/// The values of `metric` (gauges, counters or untyped) with their labels.
pub(super) fn values<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &'a str,
) -> impl Iterator<Item = (&'a prometheus_parse::Labels, f64)> + 'a {
    scrape
        .samples
        .iter()
        .filter(move |sample| sample.metric == metric)
        .filter_map(|sample| match sample.value {
            prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Untyped(value) => Some((&sample.labels, value)),
            _ => None,
        })
}
