//! `GET /v1/health/service/<name>?passing` (or `/v1/health/connect/<name>`,
//! with a `filter=` expression) as a blocking query, and the parsing of its
//! answer into endpoints.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::{
    error::{excerpt, ConsulError},
    http::{encode, ConsulHttp},
};

/// Consul's longest blocking wait.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);
/// Consul's default blocking wait.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Beyond `wait` (+ Consul's up to `wait/16` jitter) before the request counts as lost.
const HTTP_SLACK: Duration = Duration::from_secs(5);

/// One healthy instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Consul service ID (`users-1`), the key in snapshots and `Change`s.
    pub id: String,
    /// Consul service name.
    pub service: String,
    /// `Service.Address` (or `Node.Address` when empty) and `Service.Port`.
    pub address: SocketAddr,
    /// Consul tags.
    pub tags: Vec<String>,
    /// Consul service meta.
    pub meta: BTreeMap<String, String>,
    /// The Consul node the instance is registered on.
    pub node: String,
}

/// What to ask for.
#[derive(Debug, Clone)]
pub(crate) struct HealthQuery {
    service: String,
    tag: Option<String>,
    stale: bool,
    wait: Duration,
    connect: bool,
    filter: Option<String>,
    only_passing: bool,
}

impl HealthQuery {
    /// `wait` zero means Consul's default (5 min); longer than 10 min is capped.
    pub(crate) fn new(service: &str, tag: Option<&str>, stale: bool, wait: Duration) -> Self {
        let wait = if wait.is_zero() {
            DEFAULT_WAIT
        } else {
            wait.min(MAX_WAIT)
        };
        Self {
            service: service.to_owned(),
            tag: tag.map(str::to_owned),
            stale,
            wait,
            connect: false,
            filter: None,
            only_passing: true,
        }
    }

    /// Only instances matching Consul's `filter` expression (a resolver
    /// subset's `Filter`, e.g. `Service.Meta.version == "v2"`), evaluated by
    /// Consul.
    pub(crate) fn filter(mut self, filter: Option<&str>) -> Self {
        self.filter = filter
            .filter(|text| !text.trim().is_empty())
            .map(str::to_owned);
        self
    }

    /// `true` (the default): only instances whose every check passes
    /// (`?passing`). `false`: instances with a `warning` check count too, a
    /// `critical` one excludes the instance (what a resolver subset without
    /// `OnlyPassing` means).
    pub(crate) fn only_passing(mut self, only_passing: bool) -> Self {
        self.only_passing = only_passing;
        self
    }

    /// The service watched.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Asks `/v1/health/connect/<service>` (Connect-capable instances) instead
    /// of `/v1/health/service/<service>`.
    pub(crate) fn connect(mut self, connect: bool) -> Self {
        self.connect = connect;
        self
    }

    fn path(&self) -> String {
        let kind = if self.connect { "connect" } else { "service" };
        format!("/v1/health/{kind}/{}", encode(&self.service))
    }

    /// The request; `index` 0 means a plain (non-blocking) read.
    pub(crate) fn path_and_query(&self, index: u64) -> String {
        let mut parameters = Vec::new();
        if self.only_passing {
            parameters.push("passing".to_owned());
        }
        if let Some(tag) = &self.tag {
            parameters.push(format!("tag={}", encode(tag)));
        }
        if let Some(filter) = &self.filter {
            parameters.push(format!("filter={}", encode(filter)));
        }
        if self.stale {
            parameters.push("stale".to_owned());
        }
        let mut uri = self.path();
        if !parameters.is_empty() {
            uri.push('?');
            uri.push_str(&parameters.join("&"));
        }
        if index > 0 {
            uri.push(if parameters.is_empty() { '?' } else { '&' });
            uri.push_str(&format!(
                "index={index}&wait={}ms",
                self.wait.as_millis().max(1)
            ));
        }
        uri
    }

    /// How long to wait for an answer: the blocking wait, Consul's jitter, slack.
    pub(crate) fn http_timeout(&self, index: u64) -> Duration {
        if index > 0 {
            self.wait + self.wait / 16 + HTTP_SLACK
        } else {
            HTTP_SLACK * 2
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthAnswer {
    /// `X-Consul-Index` (0 when missing or unreadable).
    pub(crate) index: u64,
    pub(crate) endpoints: BTreeMap<String, Endpoint>,
    /// Entries that could not be used (no IP address, bad port, odd JSON).
    pub(crate) skipped: Vec<String>,
}

/// One request; `index` 0 means a plain read, otherwise it blocks up to `wait`.
pub(crate) async fn fetch(
    http: &ConsulHttp,
    query: &HealthQuery,
    index: u64,
) -> Result<HealthAnswer, ConsulError> {
    let path = query.path();
    let answer = http
        .get(
            &path,
            &query.path_and_query(index),
            query.http_timeout(index),
        )
        .await
        .map_err(|error| {
            crate::agent::needs(
                error,
                format!(
                    "the token needs service:read on {:?} and node:read",
                    query.service
                ),
            )
        })?;
    if answer.status != StatusCode::OK {
        return Err(ConsulError::Status {
            method: "GET".into(),
            path,
            status: answer.status.as_u16(),
            body: excerpt(&answer.body),
        });
    }
    let Parsed {
        mut endpoints,
        skipped,
        critical,
    } = parse_entries(&answer.body).map_err(|message| ConsulError::Decode {
        path: path.clone(),
        message,
    })?;
    // With ?passing Consul has filtered already; otherwise a critical check
    // rules an instance out (a warning does not).
    endpoints.retain(|id, _| !critical.contains(id));
    Ok(HealthAnswer {
        index: parse_index(&answer.headers),
        endpoints,
        skipped,
    })
}

/// `X-Consul-Index`, 0 when missing or not a number (the index rules then make it 1).
pub(crate) fn parse_index(headers: &HeaderMap) -> u64 {
    headers
        .get("x-consul-index")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The index to send next, after an answer carrying `returned`, following
/// Consul's "blocking queries" guide:
/// - an index lower than the previous one (snapshot restore, agent restart…)
///   resets the watch: the next request re-reads the whole state at once;
/// - the index sent is never 0 after an answer (an index of 0 would not block
///   and would turn the watch into a busy loop), so it is at least 1, which
///   is always safe.
pub(crate) fn next_index(previous: u64, returned: u64) -> u64 {
    let index = if returned < previous { 0 } else { returned };
    index.max(1)
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "Node")]
    node: Node,
    #[serde(rename = "Service")]
    service: Service,
    #[serde(rename = "Checks", default)]
    checks: Option<Vec<Check>>,
}

#[derive(Deserialize)]
struct Check {
    #[serde(rename = "Status", default)]
    status: String,
}

/// A parsed health list.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// The usable entries by service ID.
    pub(crate) endpoints: BTreeMap<String, Endpoint>,
    /// Why entries were skipped.
    pub(crate) skipped: Vec<String>,
    /// The service IDs of entries with a `critical` check (node checks included).
    pub(crate) critical: std::collections::BTreeSet<String>,
}

#[derive(Deserialize)]
struct Node {
    #[serde(rename = "Node", default)]
    name: String,
    #[serde(rename = "Address", default)]
    address: String,
}

#[derive(Deserialize)]
struct Service {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Service")]
    name: String,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Port")]
    port: u64,
    #[serde(rename = "Tags", default)]
    tags: Option<Vec<String>>,
    #[serde(rename = "Meta", default)]
    meta: Option<BTreeMap<String, String>>,
}

/// The health list: a JSON array of entries. A body that is not such an array
/// is an error; a single unusable entry is skipped (and reported) so that one
/// odd registration cannot freeze everybody's view.
pub(crate) fn parse_entries(body: &[u8]) -> Result<Parsed, String> {
    let entries: Option<Vec<serde_json::Value>> = serde_json::from_slice(body)
        .map_err(|error| format!("not a JSON array of health entries: {error}"))?;
    let mut endpoints = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut critical = std::collections::BTreeSet::new();
    for (position, entry) in entries.unwrap_or_default().into_iter().enumerate() {
        match endpoint(entry) {
            Ok((endpoint, is_critical)) => {
                if is_critical {
                    critical.insert(endpoint.id.clone());
                }
                if let Some(first) = endpoints.get(&endpoint.id) {
                    let first: &Endpoint = first;
                    skipped.push(format!(
                        "entry {position}: service ID {:?} on node {:?} already seen on node {:?}",
                        endpoint.id, endpoint.node, first.node
                    ));
                } else {
                    endpoints.insert(endpoint.id.clone(), endpoint);
                }
            }
            Err(reason) => skipped.push(format!("entry {position}: {reason}")),
        }
    }
    Ok(Parsed {
        endpoints,
        skipped,
        critical,
    })
}

/// One entry, and whether one of its checks is critical.
fn endpoint(entry: serde_json::Value) -> Result<(Endpoint, bool), String> {
    let Entry {
        node,
        service,
        checks,
    } = serde_json::from_value(entry).map_err(|error| error.to_string())?;
    let critical = checks
        .unwrap_or_default()
        .iter()
        .any(|check| check.status == "critical");
    let address = if service.address.trim().is_empty() {
        &node.address
    } else {
        &service.address
    };
    let ip = parse_ip(address).ok_or_else(|| {
        format!(
            "service {:?}: address {address:?} is not an IP address (host names are not resolved)",
            service.id
        )
    })?;
    let port = u16::try_from(service.port)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| {
            format!(
                "service {:?}: port {} is not usable",
                service.id, service.port
            )
        })?;
    if service.id.is_empty() {
        return Err("a service without an ID".into());
    }
    let endpoint = Endpoint {
        id: service.id,
        service: service.name,
        address: SocketAddr::new(ip, port),
        tags: service.tags.unwrap_or_default(),
        meta: service.meta.unwrap_or_default(),
        node: node.name,
    };
    Ok((endpoint, critical))
}

fn parse_ip(address: &str) -> Option<IpAddr> {
    let address = address.trim();
    let address = address
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(address);
    address.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use http::HeaderValue;

    use super::*;

    const PASSING: &str = include_str!("../tests/fixtures/health_service_passing.json");
    const EMPTY: &str = include_str!("../tests/fixtures/health_service_empty.json");
    const CRITICAL: &str = include_str!("../tests/fixtures/health_service_all.json");

    #[test]
    fn parses_a_recorded_answer_with_ipv4_ipv6_and_node_address_fallback() {
        let Parsed {
            endpoints,
            skipped,
            critical,
        } = parse_entries(PASSING.as_bytes()).unwrap();
        assert!(critical.is_empty(), "{critical:?}");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(endpoints.len(), 3, "{endpoints:#?}");
        let v4 = &endpoints["fixture-v4"];
        assert_eq!(v4.service, "fixture");
        assert_eq!(v4.address.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(v4.tags, ["v1", "primary"]);
        assert_eq!(v4.meta["version"], "0.1.0");
        assert_eq!(v4.meta["proto_package"], "grpc.health.v1");
        assert!(!v4.node.is_empty());
        let v6 = &endpoints["fixture-v6"];
        assert_eq!(v6.address.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(
            v6.address.to_string(),
            format!("[::1]:{}", v6.address.port())
        );
        // Registered without Address: Consul leaves Service.Address empty and
        // the node's address applies.
        let raw: serde_json::Value = serde_json::from_str(PASSING).unwrap();
        let fallback_raw = raw
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["Service"]["ID"] == "fixture-nodeaddr")
            .unwrap();
        assert_eq!(fallback_raw["Service"]["Address"], "");
        let fallback = &endpoints["fixture-nodeaddr"];
        assert_eq!(
            fallback.address.ip().to_string(),
            fallback_raw["Node"]["Address"].as_str().unwrap()
        );
        assert!(fallback.tags.is_empty());
        for endpoint in endpoints.values() {
            assert_ne!(endpoint.address.port(), 0);
            assert_eq!(endpoint.node, v4.node);
        }
    }

    #[test]
    fn parses_a_recorded_empty_answer() {
        let Parsed {
            endpoints, skipped, ..
        } = parse_entries(EMPTY.as_bytes()).unwrap();
        assert!(endpoints.is_empty() && skipped.is_empty());
        assert!(parse_entries(b"null").unwrap().endpoints.is_empty());
    }

    #[test]
    fn parses_a_recorded_answer_with_critical_checks_and_unknown_fields() {
        // Without ?passing: critical instances are included (Consul filters
        // with ?passing, we do not re-filter), and every entry carries fields
        // this crate does not model (Checks, Weights, Proxy, Connect, …).
        let raw: serde_json::Value = serde_json::from_str(CRITICAL).unwrap();
        let statuses: Vec<&str> = raw
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|entry| entry["Checks"].as_array().unwrap())
            .filter_map(|check| check["Status"].as_str())
            .collect();
        assert!(statuses.contains(&"critical"), "{statuses:?}");
        assert!(raw[0]["Service"]["Weights"].is_object());
        let Parsed {
            endpoints,
            skipped,
            critical,
        } = parse_entries(CRITICAL.as_bytes()).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert!(endpoints.contains_key("fixture-critical"));
        // What a watch without ?passing (a subset without OnlyPassing) drops.
        let expected: std::collections::BTreeSet<String> = raw
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| {
                entry["Checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|check| check["Status"] == "critical")
            })
            .map(|entry| entry["Service"]["ID"].as_str().unwrap().to_owned())
            .collect();
        assert!(critical.contains("fixture-critical"), "{critical:?}");
        assert_eq!(critical, expected);
    }

    #[test]
    fn tolerates_fields_a_future_consul_adds() {
        let mut raw: serde_json::Value = serde_json::from_str(PASSING).unwrap();
        for entry in raw.as_array_mut().unwrap() {
            entry["FutureTopLevel"] = serde_json::json!({"x": [1, 2]});
            entry["Service"]["FutureField"] = serde_json::json!(true);
            entry["Node"]["Partition"] = serde_json::json!("default");
        }
        let Parsed {
            endpoints, skipped, ..
        } = parse_entries(raw.to_string().as_bytes()).unwrap();
        assert_eq!(endpoints.len(), 3);
        assert!(skipped.is_empty());
    }

    #[test]
    fn skips_unusable_entries_and_rejects_non_arrays() {
        let mut raw: serde_json::Value = serde_json::from_str(PASSING).unwrap();
        let entries = raw.as_array_mut().unwrap();
        entries[0]["Service"]["Address"] = serde_json::json!("consul.example");
        entries[1]["Service"]["Port"] = serde_json::json!(70000);
        entries[2]["Service"] = serde_json::json!("garbage");
        let mut duplicate = entries[0].clone();
        duplicate["Node"]["Node"] = serde_json::json!("other-node");
        duplicate["Service"]["Address"] = serde_json::json!("10.0.0.1");
        entries.push(duplicate.clone());
        entries.push(duplicate);
        let Parsed {
            endpoints, skipped, ..
        } = parse_entries(raw.to_string().as_bytes()).unwrap();
        assert_eq!(endpoints.len(), 1, "{endpoints:?}");
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(skipped[0].contains("not an IP address"), "{skipped:?}");

        for body in [&b"{}"[..], b"", b"[1", b"\"x\"", b"<html>"] {
            assert!(
                parse_entries(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(parse_entries(b"[1, \"x\", null]").unwrap().skipped.len(), 3);
    }

    #[test]
    fn reads_the_index_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(parse_index(&headers), 0);
        headers.insert("X-Consul-Index", HeaderValue::from_static("1234"));
        assert_eq!(parse_index(&headers), 1234);
        headers.insert("X-Consul-Index", HeaderValue::from_static("-3"));
        assert_eq!(parse_index(&headers), 0);
        headers.insert(
            "X-Consul-Index",
            HeaderValue::from_static("18446744073709551615"),
        );
        assert_eq!(parse_index(&headers), u64::MAX);
    }

    #[test]
    fn index_rules_follow_the_blocking_query_guide() {
        // First answer.
        assert_eq!(next_index(0, 42), 42);
        // Moving forward, or unchanged (timeout): block on it.
        assert_eq!(next_index(42, 50), 50);
        assert_eq!(next_index(50, 50), 50);
        // Went backwards (agent restarted, snapshot restored): start over.
        assert_eq!(next_index(50, 7), 1);
        // Never 0: a zero index would not block.
        assert_eq!(next_index(0, 0), 1);
        assert_eq!(next_index(1, 0), 1);
    }

    #[test]
    fn builds_blocking_query_urls() {
        let query = HealthQuery::new("users", None, false, Duration::from_secs(5));
        assert_eq!(query.path_and_query(0), "/v1/health/service/users?passing");
        assert_eq!(
            query.path_and_query(17),
            "/v1/health/service/users?passing&index=17&wait=5000ms"
        );
        let query = HealthQuery::new("my svc", Some("zone a"), true, Duration::from_secs(3600));
        assert_eq!(
            query.path_and_query(3),
            "/v1/health/service/my%20svc?passing&tag=zone%20a&stale&index=3&wait=600000ms"
        );
        let connect =
            HealthQuery::new("payments", None, false, Duration::from_secs(5)).connect(true);
        assert_eq!(
            connect.path_and_query(0),
            "/v1/health/connect/payments?passing"
        );
        assert_eq!(query.http_timeout(3), MAX_WAIT + MAX_WAIT / 16 + HTTP_SLACK);
        let query = HealthQuery::new("users", None, false, Duration::ZERO);
        assert!(query.path_and_query(1).ends_with("wait=300000ms"));
    }

    #[test]
    fn subsets_add_a_filter_and_may_admit_warnings() {
        let query = HealthQuery::new("inventory", None, false, Duration::from_secs(5))
            .connect(true)
            .filter(Some(r#"Service.Meta.version == "v2""#));
        assert_eq!(
            query.path_and_query(0),
            "/v1/health/connect/inventory?passing&filter=Service.Meta.version%20%3D%3D%20%22v2%22"
        );
        let warnings_too = query.clone().only_passing(false);
        assert_eq!(
            warnings_too.path_and_query(9),
            "/v1/health/connect/inventory?filter=Service.Meta.version%20%3D%3D%20%22v2%22&index=9&wait=5000ms"
        );
        let plain = HealthQuery::new("inventory", None, false, Duration::from_secs(5))
            .only_passing(false)
            .filter(Some("  "));
        assert_eq!(plain.path_and_query(0), "/v1/health/service/inventory");
        assert_eq!(
            plain.path_and_query(3),
            "/v1/health/service/inventory?index=3&wait=5000ms"
        );
    }
}
