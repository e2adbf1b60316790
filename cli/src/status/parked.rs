//! The line under `mesh status`'s table about orders that wait for an
//! operator. The order saga parks an order when the state it finds
//! upstream contradicts it; every orders instance exports the count of the
//! shared database as `orders_parked{reason}` on its metrics port
//! (`Meta.metrics_port` in Consul). `mesh status` reads it from the first
//! passing instance that answers: plain HTTP, no identity needed, the same
//! read-only view as the table (the operator RPCs need the `operator`
//! identity; the metric only needs the metrics port).

use std::collections::BTreeMap;

use crate::consul::ConsulApi;

use super::scrape;

/// The metric orders exports.
const METRIC: &str = "orders_parked";

/// Parked orders by reason (reasons with none left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Parked {
    by_reason: BTreeMap<String, u64>,
}

impl Parked {
    /// Reads the count from `metrics`, the text of a `/metrics` scrape.
    #[cfg(test)]
    fn from_metrics(metrics: &str) -> anyhow::Result<Self> {
        Ok(Self::from_scrape(&scrape::parse(metrics)?))
    }

    fn from_scrape(scrape: &prometheus_parse::Scrape) -> Self {
        let mut by_reason = BTreeMap::new();
        for (labels, count) in scrape::values(scrape, METRIC) {
            if count >= 1.0 {
                let reason = labels.get("reason").unwrap_or("unknown").to_owned();
                *by_reason.entry(reason).or_default() += count as u64;
            }
        }
        Self { by_reason }
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
    let scrapes = scrape::passing(api, "orders").await?;
    Some(match scrapes.first() {
        Some(scrape) => Parked::from_scrape(scrape).line(),
        None => "parked orders: unknown (no passing orders instance answered on its metrics port; start orders with --metrics-listen)\n"
            .to_owned(),
    })
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
