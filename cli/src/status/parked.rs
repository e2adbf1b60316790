//! The line under `mesh status`'s table about orders that wait for an
//! operator. The order saga parks an order when the state it finds
//! upstream contradicts it; every orders instance exports the count of the
//! shared database as `orders_parked{reason}` on its metrics port
//! (`Meta.metrics_port` in Consul). `mesh status` reads it from the first
//! passing instance that answers: plain HTTP, no identity needed, the same
//! read-only view as the table (the operator RPCs need the `operator`
//! identity; the metric only needs the metrics port).

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::consul::{model::HealthEntry, ConsulApi};

/// How long one metrics read may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The metric orders exports.
const METRIC: &str = "orders_parked";

/// Parked orders by reason (reasons with none left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Parked {
    by_reason: BTreeMap<String, u64>,
}

impl Parked {
    /// Reads the count from `metrics`, the text of a `/metrics` scrape.
    pub(crate) fn from_metrics(metrics: &str) -> anyhow::Result<Self> {
        let lines = metrics.lines().map(|line| Ok(line.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).context("parse /metrics")?;
        let mut by_reason = BTreeMap::new();
        for sample in scrape
            .samples
            .iter()
            .filter(|sample| sample.metric == METRIC)
        {
            let count = match sample.value {
                prometheus_parse::Value::Gauge(value) | prometheus_parse::Value::Untyped(value) => {
                    value
                }
                _ => continue,
            };
            if count >= 1.0 {
                let reason = sample.labels.get("reason").unwrap_or("unknown").to_owned();
                *by_reason.entry(reason).or_default() += count as u64;
            }
        }
        Ok(Self { by_reason })
    }

    fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }

    /// "parked orders: none", or the count by reason and what to do.
    pub(crate) fn line(&self) -> String {
        if self.total() == 0 {
            return "parked orders: none\n".to_owned();
        }
        let reasons: Vec<String> = self
            .by_reason
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect();
        format!(
            "parked orders: {} wait for an operator ({}): see ListParkedOrders, then RetryParkedOrder or ResolveParkedOrder (operator identity)\n",
            self.total(),
            reasons.join(", ")
        )
    }
}

/// The line about parked orders: `None` when no orders instance passes.
pub(crate) async fn line(api: &ConsulApi) -> Option<String> {
    let orders = api.health("orders", true).await.ok()?;
    if orders.is_empty() {
        return None;
    }
    for entry in &orders {
        let Some(address) = metrics_address(entry) else {
            continue;
        };
        if let Ok(Ok(parked)) = tokio::time::timeout(SCRAPE_TIMEOUT, read(&address)).await {
            return Some(parked.line());
        }
    }
    Some(
        "parked orders: unknown (no passing orders instance answered on its metrics port; start orders with --metrics-listen)\n"
            .to_owned(),
    )
}

/// `host:port` of the instance's metrics endpoint, from `Meta.metrics_port`.
fn metrics_address(entry: &HealthEntry) -> Option<String> {
    let port: u16 = entry.meta("metrics_port")?.parse().ok()?;
    let service = entry.socket_address();
    let host = service.rsplit_once(':')?.0;
    Some(format!("{host}:{port}"))
}

async fn read(address: &str) -> anyhow::Result<Parked> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{address}/metrics").parse()?;
    let response = client.get(uri).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET /metrics: {}",
        response.status()
    );
    let body = response.into_body().collect().await?.to_bytes();
    Parked::from_metrics(&String::from_utf8_lossy(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parked_orders_by_reason_from_the_metrics_text() {
        let text = "\
# HELP orders_parked Orders the saga parked for an operator
# TYPE orders_parked gauge
orders_parked{reason=\"inventory_refused\"} 2
orders_parked{reason=\"payment_state\"} 1
orders_parked{reason=\"reservation_state\"} 0
grpc_server_started_total{grpc_method=\"PlaceOrder\"} 7
";
        let parked = Parked::from_metrics(text).unwrap();
        assert_eq!(
            parked.line(),
            "parked orders: 3 wait for an operator (inventory_refused 2, payment_state 1): see ListParkedOrders, then RetryParkedOrder or ResolveParkedOrder (operator identity)\n"
        );
        let none = Parked::from_metrics("orders_parked{reason=\"payment_state\"} 0\n").unwrap();
        assert_eq!(none.line(), "parked orders: none\n");
    }
}
