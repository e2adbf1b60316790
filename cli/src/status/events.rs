//! The line under `mesh status`'s table about events: the broker the
//! services found in Consul (the `mesh-broker` service: its scheme from
//! `Meta.scheme`, its address and health), the outbox backlog orders
//! reports (`orders_outbox_pending` and
//! `orders_outbox_oldest_pending_age_seconds`: counts of the shared
//! database, so the largest any passing instance reports) and the consumer
//! lag of each group (`mesh_events_consumer_lag{group}` from shipping: the
//! broker's count for the whole group, so again the largest).

use std::collections::BTreeMap;

use crate::consul::ConsulApi;

use super::scrape;

/// The broker's service name in Consul.
const BROKER: &str = "mesh-broker";

/// What the metrics say about the events path.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Backlog {
    /// Events in the outbox not yet confirmed by the broker, and the
    /// oldest one's age in seconds (`None`: no orders instance answered).
    outbox: Option<(u64, u64)>,
    /// group → events not yet acknowledged (`None`: not sampled yet).
    lag: BTreeMap<String, Option<u64>>,
}

impl Backlog {
    /// From orders' and shipping's scrapes.
    pub(crate) fn from_scrapes(
        orders: &[prometheus_parse::Scrape],
        consumers: &[prometheus_parse::Scrape],
    ) -> Self {
        let largest = |metric: &str| {
            orders
                .iter()
                .flat_map(|scrape| scrape::values(scrape, metric).map(|(_, value)| value))
                .fold(None, |most: Option<f64>, value| {
                    Some(most.map_or(value, |most| most.max(value)))
                })
        };
        let outbox = largest("orders_outbox_pending").map(|pending| {
            let age = largest("orders_outbox_oldest_pending_age_seconds").unwrap_or(0.0);
            (pending.max(0.0) as u64, age.max(0.0) as u64)
        });
        let mut lag: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for scrape in consumers {
            for (labels, value) in scrape::values(scrape, "mesh_events_consumer_lag") {
                let group = labels.get("group").unwrap_or("unknown").to_owned();
                // -1: that instance has not sampled the broker yet.
                let sampled = (value >= 0.0).then_some(value as u64);
                let entry = lag.entry(group).or_insert(None);
                *entry = match (*entry, sampled) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        Self { outbox, lag }
    }

    /// `outbox backlog 0 (oldest 0 s), consumer lag shipping 0`.
    fn describe(&self) -> String {
        let outbox = match self.outbox {
            Some((pending, age)) => format!("outbox backlog {pending} (oldest {age} s)"),
            None => "outbox backlog unknown (no orders instance answered on its metrics port)"
                .to_owned(),
        };
        let lag = if self.lag.is_empty() {
            "consumer lag unknown (no consumer answered on its metrics port)".to_owned()
        } else {
            let groups: Vec<String> = self
                .lag
                .iter()
                .map(|(group, lag)| match lag {
                    Some(lag) => format!("{group} {lag}"),
                    None => format!("{group} not sampled yet"),
                })
                .collect();
            format!("consumer lag {}", groups.join(", "))
        };
        format!("{outbox}, {lag}")
    }
}

/// The events line: `None` when neither a broker nor orders is registered.
pub(crate) async fn line(api: &ConsulApi) -> Option<String> {
    let brokers = api.health(BROKER, false).await.unwrap_or_default();
    let orders = scrape::passing(api, "orders").await;
    if brokers.is_empty() && orders.is_none() {
        return None;
    }
    let broker = match brokers.first() {
        Some(entry) => format!(
            "broker {} at {} ({})",
            entry.meta("scheme").unwrap_or("unknown"),
            entry.socket_address(),
            super::table::Row::from_entry(entry).status.as_str()
        ),
        None => {
            format!("broker not registered in Consul as {BROKER} (services given a URL use it)")
        }
    };
    let consumers = scrape::passing(api, "shipping").await.unwrap_or_default();
    let backlog = Backlog::from_scrapes(&orders.unwrap_or_default(), &consumers);
    Some(format!("events: {broker}; {}\n", backlog.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_largest_backlog_and_lag_any_instance_reports() {
        let orders = [
            scrape::parse("orders_outbox_pending 3\norders_outbox_oldest_pending_age_seconds 12\n")
                .unwrap(),
            scrape::parse("orders_outbox_pending 1\norders_outbox_oldest_pending_age_seconds 2\n")
                .unwrap(),
        ];
        let consumers = [
            scrape::parse("mesh_events_consumer_lag{group=\"shipping\"} 7\n").unwrap(),
            scrape::parse("mesh_events_consumer_lag{group=\"shipping\"} -1\n").unwrap(),
        ];
        let backlog = Backlog::from_scrapes(&orders, &consumers);
        assert_eq!(
            backlog.describe(),
            "outbox backlog 3 (oldest 12 s), consumer lag shipping 7"
        );
        let unsampled = Backlog::from_scrapes(
            &[],
            &[scrape::parse("mesh_events_consumer_lag{group=\"shipping\"} -1\n").unwrap()],
        );
        assert_eq!(
            unsampled.describe(),
            "outbox backlog unknown (no orders instance answered on its metrics port), consumer lag shipping not sampled yet"
        );
    }
}
