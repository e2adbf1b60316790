//! The benchmark's report: text for people, one JSON object for scripts
//! (stable field names: via, rpc, concurrency, requests, ok, errors,
//! duration_s, rps, latency_us {p50, p90, p99, p999, max}).

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::load::Outcome;

/// The report of one run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// `mesh`, `direct` or `proxy`.
    pub(crate) via: &'static str,
    /// The address of a direct or proxy run.
    pub(crate) address: Option<String>,
    /// The `--rpc` name.
    pub(crate) rpc: &'static str,
    /// The Consul service of the RPC.
    pub(crate) service: &'static str,
    /// Workers.
    pub(crate) concurrency: usize,
    /// Requests sent.
    pub(crate) requests: u64,
    /// Answered OK.
    pub(crate) ok: u64,
    /// Failures by gRPC code name (`UNAVAILABLE`…).
    pub(crate) errors: BTreeMap<&'static str, u64>,
    /// Wall time of the run.
    pub(crate) duration_s: f64,
    /// Requests per second.
    pub(crate) rps: f64,
    /// Latency percentiles of all requests, µs.
    pub(crate) latency_us: Latency,
}

/// Latency percentiles, µs.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Latency {
    /// Median.
    pub(crate) p50: u64,
    /// 90th percentile.
    pub(crate) p90: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    pub(crate) p999: u64,
    /// Slowest.
    pub(crate) max: u64,
}

impl Report {
    /// Builds the report of `outcome`.
    pub(crate) fn new(
        via: &'static str,
        address: Option<String>,
        rpc: &'static str,
        service: &'static str,
        concurrency: usize,
        outcome: &Outcome,
    ) -> Self {
        let requests = outcome.requests();
        let duration_s = outcome.elapsed.as_secs_f64();
        let histogram = &outcome.latency;
        let at = |quantile: f64| {
            if histogram.is_empty() {
                0
            } else {
                histogram.value_at_quantile(quantile)
            }
        };
        Self {
            via,
            address,
            rpc,
            service,
            concurrency,
            requests,
            ok: outcome.ok,
            errors: outcome.errors.clone(),
            duration_s,
            rps: if duration_s > 0.0 {
                requests as f64 / duration_s
            } else {
                0.0
            },
            latency_us: Latency {
                p50: at(0.50),
                p90: at(0.90),
                p99: at(0.99),
                p999: at(0.999),
                max: if histogram.is_empty() {
                    0
                } else {
                    histogram.max()
                },
            },
        }
    }

    /// The text report.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let target = match &self.address {
            Some(address) => format!("{} {address}", self.via),
            None => self.via.to_owned(),
        };
        let _ = writeln!(
            out,
            "{} ({}) via {target}, concurrency {}",
            self.rpc, self.service, self.concurrency
        );
        let errors = if self.errors.is_empty() {
            "0".to_owned()
        } else {
            let by_code: Vec<String> = self
                .errors
                .iter()
                .map(|(code, count)| format!("{code} {count}"))
                .collect();
            format!(
                "{} ({})",
                self.errors.values().sum::<u64>(),
                by_code.join(", ")
            )
        };
        let _ = writeln!(
            out,
            "  requests {}   ok {}   errors {errors}",
            self.requests, self.ok
        );
        let _ = writeln!(
            out,
            "  duration {:.2} s   {:.1} requests/s",
            self.duration_s, self.rps
        );
        let latency = &self.latency_us;
        let _ = writeln!(
            out,
            "  latency µs   p50 {}   p90 {}   p99 {}   p99.9 {}   max {}",
            latency.p50, latency.p90, latency.p99, latency.p999, latency.max
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::*;

    #[test]
    fn json_has_the_stable_field_names() {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for micros in 1..=1000 {
            latency.record(micros).unwrap();
        }
        let outcome = Outcome {
            latency,
            ok: 990,
            errors: BTreeMap::from([("UNAVAILABLE", 10)]),
            elapsed: Duration::from_secs(2),
        };
        let report = Report::new(
            "direct",
            Some("127.0.0.1:1".into()),
            "get-item",
            "inventory",
            8,
            &outcome,
        );
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["via"], "direct");
        assert_eq!(json["rpc"], "get-item");
        assert_eq!(json["concurrency"], 8);
        assert_eq!(json["requests"], 1000);
        assert_eq!(json["ok"], 990);
        assert_eq!(json["errors"]["UNAVAILABLE"], 10);
        assert_eq!(json["duration_s"], 2.0);
        assert_eq!(json["rps"], 500.0);
        let p50 = json["latency_us"]["p50"].as_u64().unwrap();
        assert!((495..=505).contains(&p50), "{p50}");
        for field in ["p90", "p99", "p999", "max"] {
            assert!(
                json["latency_us"][field].as_u64().unwrap() >= p50,
                "{field}"
            );
        }
        assert!(
            report.text().contains("UNAVAILABLE 10"),
            "{}",
            report.text()
        );
    }
}
