//! The benchmark's report: text for people, one JSON object for scripts
//! (stable field names: via, rpc, concurrency, requests, ok, errors,
//! duration_s, rps, latency_us {p50, p90, p99, p999, max}, and with
//! `--timeline` a timeline of windows {t_ms, requests, errors, p50_us,
//! p99_us, max_us}).

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::workers::{Outcome, Sample};

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
    /// Requests by start time, in windows (with `--timeline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timeline: Option<Vec<Window>>,
    /// With `--via mesh`: the calls each discovery-chain target took.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) targets: Vec<super::targets::TargetShare>,
}

/// The requests that started in one window of a run.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Window {
    /// Start of the window, ms after the run began.
    pub(crate) t_ms: u64,
    /// Requests started in it.
    pub(crate) requests: u64,
    /// Of which failed.
    pub(crate) errors: u64,
    /// Latency percentiles of its requests, µs.
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
}

/// `samples` grouped by start time into windows of `width` (empty windows
/// included, so gaps show).
pub(crate) fn timeline(samples: &[Sample], width: std::time::Duration) -> Vec<Window> {
    let width_us = u64::try_from(width.as_micros()).unwrap_or(u64::MAX).max(1);
    let count = samples
        .iter()
        .map(|sample| sample.start_us / width_us + 1)
        .max()
        .unwrap_or(0);
    let mut windows: Vec<Vec<&Sample>> = (0..count).map(|_| Vec::new()).collect();
    for sample in samples {
        windows[usize::try_from(sample.start_us / width_us).unwrap_or(usize::MAX)].push(sample);
    }
    windows
        .into_iter()
        .enumerate()
        .map(|(n, mut window)| {
            window.sort_by_key(|sample| sample.latency_us);
            let at = |quantile: f64| {
                let rank = ((window.len() as f64 * quantile).ceil() as usize).max(1);
                window.get(rank - 1).map_or(0, |sample| sample.latency_us)
            };
            Window {
                t_ms: n as u64 * width_us / 1000,
                requests: window.len() as u64,
                errors: window.iter().filter(|sample| !sample.ok).count() as u64,
                p50_us: at(0.50),
                p99_us: at(0.99),
                max_us: window.last().map_or(0, |sample| sample.latency_us),
            }
        })
        .collect()
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
        timeline_window: Option<std::time::Duration>,
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
            timeline: timeline_window.map(|width| timeline(&outcome.samples, width)),
            targets: Vec::new(),
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
        if !self.targets.is_empty() {
            let _ = writeln!(out, "  per chain target:");
            for share in &self.targets {
                let _ = writeln!(
                    out,
                    "    {:<40} {:>9} calls  {:6.2} %",
                    share.target, share.calls, share.percent
                );
            }
        }
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
            samples: Vec::new(),
        };
        let report = Report::new(
            "direct",
            Some("127.0.0.1:1".into()),
            "get-item",
            "inventory",
            8,
            &outcome,
            None,
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
        assert!(json.get("timeline").is_none(), "{json}");
    }

    #[test]
    fn timeline_groups_requests_by_start_window_and_keeps_gaps() {
        let sample = |start_us, latency_us, ok| Sample {
            start_us,
            latency_us,
            ok,
        };
        let samples = [
            sample(10, 100, true),
            sample(90_000, 300, true),
            sample(50_000, 200, false),
            // nothing between 100 and 200 ms
            sample(250_000, 40_000, true),
        ];
        let windows = timeline(&samples, Duration::from_millis(100));
        assert_eq!(
            windows,
            [
                Window {
                    t_ms: 0,
                    requests: 3,
                    errors: 1,
                    p50_us: 200,
                    p99_us: 300,
                    max_us: 300
                },
                Window {
                    t_ms: 100,
                    requests: 0,
                    errors: 0,
                    p50_us: 0,
                    p99_us: 0,
                    max_us: 0
                },
                Window {
                    t_ms: 200,
                    requests: 1,
                    errors: 0,
                    p50_us: 40_000,
                    p99_us: 40_000,
                    max_us: 40_000
                },
            ]
        );
        assert!(timeline(&[], Duration::from_millis(100)).is_empty());
    }
}
