//! Scraping a process's Prometheus `/metrics`.

use std::time::Duration;

/// The samples of one scrape.
#[derive(Debug)]
pub struct Scrape {
    samples: Vec<prometheus_parse::Sample>,
}

/// GETs `http://<address>/metrics` and parses the text format; panics if the
/// endpoint does not answer or the text does not parse.
pub fn scrape_metrics(address: &str) -> Scrape {
    let text = ureq::get(&format!("http://{address}/metrics"))
        .config()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .call()
        .unwrap_or_else(|error| panic!("GET http://{address}/metrics: {error}"))
        .body_mut()
        .read_to_string()
        .expect("read /metrics");
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|error| panic!("parse /metrics: {error}\n{text}"));
    Scrape {
        samples: scrape.samples,
    }
}

impl Scrape {
    /// The sum of every counter or gauge sample named `name` (a counter may
    /// be exposed with or without its `_total` suffix) whose labels include
    /// all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let bare = name.strip_suffix("_total").unwrap_or(name);
        self.samples
            .iter()
            .filter(|sample| sample.metric == name || sample.metric == bare)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
            })
            .map(|sample| match sample.value {
                prometheus_parse::Value::Counter(value)
                | prometheus_parse::Value::Gauge(value)
                | prometheus_parse::Value::Untyped(value) => value,
                _ => 0.0,
            })
            .sum()
    }
}
