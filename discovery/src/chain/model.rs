//! The compiled discovery chain as Consul serves it at
//! `GET /v1/discovery-chain/<service>` (Consul 1.6+; shapes recorded from the
//! 1.8.7 agent in `tests/fixtures/chain_*.json`): a graph from `StartNode`
//! through `router`, `splitter` and `resolver` nodes to `Targets`.
//!
//! Consul has already applied its own rules here: nested splitters are
//! flattened, redirects and `DefaultSubset` are resolved into targets, a
//! catch-all route (`PathPrefix "/"`) ends every router. Fields this crate does
//! not model are ignored; `null` collections and strings read as empty.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Deserializer};

use super::go_duration;

/// One service's compiled chain.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiscoveryChain {
    /// The service the chain starts from.
    pub service_name: String,
    /// Its namespace (`default` outside Consul Enterprise).
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    /// The datacenter that compiled it (the local one).
    #[serde(default, deserialize_with = "nullable")]
    pub datacenter: String,
    /// `tcp` (no `service-defaults`), `http`, `http2` or `grpc`.
    #[serde(default, deserialize_with = "nullable")]
    pub protocol: String,
    /// The key of the first node in [`DiscoveryChain::nodes`].
    pub start_node: String,
    /// Nodes by key (`router:inventory.default`, `splitter:…`, `resolver:…`).
    #[serde(default, deserialize_with = "nullable")]
    pub nodes: BTreeMap<String, ChainNode>,
    /// Targets by ID (`v2.inventory.default.dc1`).
    #[serde(default, deserialize_with = "nullable")]
    pub targets: BTreeMap<String, ChainTarget>,
}

/// A node of the chain, by its `Type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "Type", rename_all = "lowercase")]
pub enum ChainNode {
    /// A `service-router`: routes tried in order.
    Router(RouterNode),
    /// A `service-splitter`: a weighted choice.
    Splitter(SplitterNode),
    /// A `service-resolver`: one target and its failover targets.
    Resolver(ResolverNode),
}

/// A router node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouterNode {
    /// `inventory.default`.
    pub name: String,
    /// In order; the first that matches wins.
    #[serde(default, deserialize_with = "nullable")]
    pub routes: Vec<ChainRoute>,
}

/// One route of a router node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChainRoute {
    /// What the operator wrote in the `service-router` entry.
    pub definition: RouteDefinition,
    /// The node a matching request goes to.
    pub next_node: String,
}

/// A route as written: what it matches and where it sends.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouteDefinition {
    /// What requests it takes (none: every request).
    #[serde(rename = "Match", default)]
    pub matches: Option<RouteMatch>,
    /// Where they go and how.
    #[serde(default)]
    pub destination: Option<RouteDestination>,
}

/// `Match`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RouteMatch {
    /// `Match.HTTP`.
    #[serde(rename = "HTTP", default)]
    pub http: Option<HttpMatch>,
}

/// `Match.HTTP`: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpMatch {
    /// The whole path (`/pkg.Service/Method` for gRPC).
    #[serde(default, deserialize_with = "nullable")]
    pub path_exact: String,
    /// A path prefix.
    #[serde(default, deserialize_with = "nullable")]
    pub path_prefix: String,
    /// A regular expression the whole path must match.
    #[serde(default, deserialize_with = "nullable")]
    pub path_regex: String,
    /// Header (gRPC metadata) conditions.
    #[serde(default, deserialize_with = "nullable")]
    pub header: Vec<HeaderMatch>,
    /// Query-string conditions (a gRPC call has no query string).
    #[serde(default, deserialize_with = "nullable")]
    pub query_param: Vec<QueryParamMatch>,
    /// HTTP methods (a gRPC call is always `POST`).
    #[serde(default, deserialize_with = "nullable")]
    pub methods: Vec<String>,
}

/// One header condition; Consul allows exactly one of `Present`, `Exact`,
/// `Prefix`, `Suffix`, `Regex`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HeaderMatch {
    /// The header name.
    pub name: String,
    /// The header is there.
    #[serde(default)]
    pub present: bool,
    /// The value equals this.
    #[serde(default, deserialize_with = "nullable")]
    pub exact: String,
    /// The value starts with this.
    #[serde(default, deserialize_with = "nullable")]
    pub prefix: String,
    /// The value ends with this.
    #[serde(default, deserialize_with = "nullable")]
    pub suffix: String,
    /// The whole value matches this regular expression.
    #[serde(default, deserialize_with = "nullable")]
    pub regex: String,
    /// The condition is negated.
    #[serde(default)]
    pub invert: bool,
}

/// One query-string condition.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryParamMatch {
    /// The parameter name.
    pub name: String,
    /// The parameter is there.
    #[serde(default)]
    pub present: bool,
    /// Its value equals this.
    #[serde(default, deserialize_with = "nullable")]
    pub exact: String,
    /// Its value matches this regular expression.
    #[serde(default, deserialize_with = "nullable")]
    pub regex: String,
}

/// `Destination`: where a route sends, with its timeout and retries.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouteDestination {
    /// The service (empty: the router's own).
    #[serde(default, deserialize_with = "nullable")]
    pub service: String,
    /// The subset of it.
    #[serde(default, deserialize_with = "nullable")]
    pub service_subset: String,
    /// Its namespace.
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    /// Replace the matched path prefix with this before forwarding.
    #[serde(default, deserialize_with = "nullable")]
    pub prefix_rewrite: String,
    /// Longest the whole request may take (none: no route timeout).
    #[serde(default, deserialize_with = "go_duration::optional")]
    pub request_timeout: Option<Duration>,
    /// Retries (0: not set).
    #[serde(default)]
    pub num_retries: u32,
    /// Retry when the connection cannot be made.
    #[serde(default)]
    pub retry_on_connect_failure: bool,
    /// Retry on these HTTP status codes.
    #[serde(default, deserialize_with = "nullable")]
    pub retry_on_status_codes: Vec<u32>,
}

/// A splitter node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SplitterNode {
    /// `inventory.default`.
    pub name: String,
    /// The weighted branches (weights in percent, to 0.01).
    #[serde(default, deserialize_with = "nullable")]
    pub splits: Vec<ChainSplit>,
}

/// One branch of a splitter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChainSplit {
    /// Percent of requests (0–100, to 0.01; Consul leaves a 0 out).
    #[serde(default)]
    pub weight: f32,
    /// The node they go to.
    pub next_node: String,
}

/// A resolver node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResolverNode {
    /// `v2.inventory.default.dc1`.
    pub name: String,
    /// Its target and failover.
    pub resolver: ChainResolver,
}

/// `Resolver` of a resolver node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChainResolver {
    /// Dial timeout (Consul fills in 5 s when the entry sets none).
    #[serde(default, deserialize_with = "go_duration::optional")]
    pub connect_timeout: Option<Duration>,
    /// No `service-resolver` entry exists: Consul's defaults.
    #[serde(default)]
    pub default: bool,
    /// The target's ID in [`DiscoveryChain::targets`].
    pub target: String,
    /// Where to go when the target has no healthy instance.
    #[serde(default)]
    pub failover: Option<ChainFailover>,
}

/// `Failover` of a resolver node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChainFailover {
    /// Target IDs, tried in order.
    #[serde(default, deserialize_with = "nullable")]
    pub targets: Vec<String>,
}

/// One target: a service (subset) in a datacenter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChainTarget {
    /// `v2.inventory.default.dc1`.
    #[serde(rename = "ID")]
    pub id: String,
    /// The Consul service.
    pub service: String,
    /// The subset's name (empty: the whole service).
    #[serde(default, deserialize_with = "nullable")]
    pub service_subset: String,
    /// Its namespace.
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    /// Its datacenter.
    #[serde(default, deserialize_with = "nullable")]
    pub datacenter: String,
    /// Which instances belong to it.
    #[serde(default)]
    pub subset: TargetSubset,
}

/// `Subset` of a target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetSubset {
    /// Consul's filter expression over health entries (`Service.Meta.version == "v2"`).
    #[serde(default, deserialize_with = "nullable")]
    pub filter: String,
    /// Only instances whose every check passes (else `warning` counts as healthy).
    #[serde(default)]
    pub only_passing: bool,
}

impl DiscoveryChain {
    /// Parses the body of `GET /v1/discovery-chain/<service>` (`{"Chain": …}`).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Chain")]
            chain: Option<DiscoveryChain>,
        }
        let answer: Answer = serde_json::from_slice(body)
            .map_err(|error| format!("not a discovery chain: {error}"))?;
        answer
            .chain
            .ok_or_else(|| "the answer has no Chain".to_owned())
    }

    /// The chain Consul compiles for a service without any config entry: one
    /// resolver with Consul's defaults and one target, the whole service in
    /// the local datacenter. Used where a Consul has no discovery chains.
    pub fn default_for(service: &str) -> Self {
        let target = format!("{service}.default");
        let node = format!("resolver:{target}");
        Self {
            service_name: service.to_owned(),
            namespace: "default".to_owned(),
            datacenter: String::new(),
            protocol: "tcp".to_owned(),
            start_node: node.clone(),
            nodes: BTreeMap::from([(
                node,
                ChainNode::Resolver(ResolverNode {
                    name: target.clone(),
                    resolver: ChainResolver {
                        connect_timeout: None,
                        default: true,
                        target: target.clone(),
                        failover: None,
                    },
                }),
            )]),
            targets: BTreeMap::from([(
                target.clone(),
                ChainTarget {
                    id: target,
                    service: service.to_owned(),
                    service_subset: String::new(),
                    namespace: "default".to_owned(),
                    datacenter: String::new(),
                    subset: TargetSubset::default(),
                },
            )]),
        }
    }
}

/// `null` reads as the type's default (Consul writes `null` for empty lists).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../../tests/fixtures/chain_default.json");
    const CANARY: &str = include_str!("../../tests/fixtures/chain_canary.json");
    const UNUSABLE: &str = include_str!("../../tests/fixtures/chain_unusable.json");
    const NESTED: &str = include_str!("../../tests/fixtures/chain_nested.json");
    const REDIRECT: &str = include_str!("../../tests/fixtures/chain_redirect.json");

    fn resolver<'a>(chain: &'a DiscoveryChain, key: &str) -> &'a ChainResolver {
        match &chain.nodes[key] {
            ChainNode::Resolver(node) => &node.resolver,
            other => panic!("{key} is not a resolver: {other:?}"),
        }
    }

    #[test]
    fn parses_the_chain_of_a_service_without_config_entries() {
        let chain = DiscoveryChain::parse(DEFAULT.as_bytes()).unwrap();
        assert_eq!(chain.service_name, "payments");
        assert_eq!(chain.protocol, "tcp");
        assert_eq!(chain.start_node, "resolver:payments.default.dc1");
        let resolver = resolver(&chain, &chain.start_node);
        assert!(resolver.default);
        assert_eq!(resolver.connect_timeout, Some(Duration::from_secs(5)));
        let target = &chain.targets[&resolver.target];
        assert_eq!(target.service, "payments");
        assert_eq!(target.datacenter, "dc1");
        assert_eq!(target.subset, TargetSubset::default());
    }

    #[test]
    fn parses_the_shipped_canary_chain() {
        let chain = DiscoveryChain::parse(CANARY.as_bytes()).unwrap();
        assert_eq!(chain.protocol, "grpc");
        let ChainNode::Router(router) = &chain.nodes[&chain.start_node] else {
            panic!("the canary chain starts with its router");
        };
        assert_eq!(
            router.routes.len(),
            2,
            "the header route and Consul's catch-all"
        );
        let canary = &router.routes[0];
        let header = &canary
            .definition
            .matches
            .as_ref()
            .unwrap()
            .http
            .as_ref()
            .unwrap()
            .header;
        assert_eq!(header[0].name, "x-canary");
        assert_eq!(header[0].exact, "1");
        assert_eq!(canary.next_node, "resolver:v2.inventory.default.dc1");
        let catch_all = &router.routes[1];
        assert_eq!(
            catch_all
                .definition
                .matches
                .as_ref()
                .unwrap()
                .http
                .as_ref()
                .unwrap()
                .path_prefix,
            "/"
        );
        let ChainNode::Splitter(splitter) = &chain.nodes[&catch_all.next_node] else {
            panic!("the catch-all goes to the splitter");
        };
        let weights: Vec<f32> = splitter.splits.iter().map(|split| split.weight).collect();
        assert_eq!(weights, [100.0, 0.0]);
        let v2 = resolver(&chain, "resolver:v2.inventory.default.dc1");
        assert_eq!(
            v2.failover.as_ref().unwrap().targets,
            ["v1.inventory.default.dc1"]
        );
        assert_eq!(v2.connect_timeout, Some(Duration::from_millis(500)));
        let target = &chain.targets["v2.inventory.default.dc1"];
        assert_eq!(target.service_subset, "v2");
        assert_eq!(target.subset.filter, r#"Service.Meta.version == "v2""#);
        assert!(
            chain.targets["v1.inventory.default.dc1"]
                .subset
                .only_passing
        );
    }

    #[test]
    fn parses_every_router_field_consul_accepts() {
        let chain = DiscoveryChain::parse(UNUSABLE.as_bytes()).unwrap();
        let ChainNode::Router(router) = &chain.nodes[&chain.start_node] else {
            panic!("starts with a router");
        };
        let http = |index: usize| {
            router.routes[index]
                .definition
                .matches
                .as_ref()
                .unwrap()
                .http
                .clone()
                .unwrap()
        };
        assert_eq!(http(0).query_param[0].name, "debug");
        assert!(http(0).query_param[0].present);
        assert_eq!(http(1).methods, ["GET"]);
        let rewrite = router.routes[2].definition.destination.as_ref().unwrap();
        assert_eq!(rewrite.prefix_rewrite, "/x");
        let regex = http(3);
        assert_eq!(
            regex.path_regex,
            r"/mesh\.inventory\.v1\.Inventory/(Get|List).*"
        );
        assert!(regex.header[0].invert);
        assert!(regex.header[1].present);
        let destination = router.routes[3].definition.destination.as_ref().unwrap();
        assert_eq!(
            destination.request_timeout,
            Some(Duration::from_millis(250))
        );
        assert_eq!(destination.num_retries, 4);
        assert!(destination.retry_on_connect_failure);
        assert_eq!(destination.retry_on_status_codes, [429, 503, 404]);
        let headers = http(4).header;
        assert_eq!(headers[0].suffix, "-eu");
        assert_eq!(headers[1].regex, "[0-9]+");
        assert_eq!(headers[2].name, "x-trace-bin");
        let v1 = resolver(&chain, "resolver:v1.inventory.default.dc1");
        assert_eq!(
            v1.failover.as_ref().unwrap().targets,
            ["v1.inventory.default.dc2"]
        );
        assert_eq!(chain.targets["v1.inventory.default.dc2"].datacenter, "dc2");
        assert_eq!(v1.connect_timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn parses_flattened_nested_splits_and_resolved_redirects() {
        let chain = DiscoveryChain::parse(NESTED.as_bytes()).unwrap();
        let ChainNode::Splitter(splitter) = &chain.nodes[&chain.start_node] else {
            panic!("starts with the splitter");
        };
        let total: f32 = splitter.splits.iter().map(|split| split.weight).sum();
        assert!((total - 100.0).abs() < 0.001, "{total}");
        assert!(splitter.splits.iter().any(|split| split.weight == 20.2));
        assert!(chain.targets.contains_key("legacy.default.dc1"));

        let redirect = DiscoveryChain::parse(REDIRECT.as_bytes()).unwrap();
        assert_eq!(redirect.service_name, "inventory-old");
        assert_eq!(redirect.start_node, "resolver:v2.inventory.default.dc1");
        assert_eq!(
            redirect.targets["v2.inventory.default.dc1"].service,
            "inventory"
        );
    }

    #[test]
    fn tolerates_nulls_and_new_fields_and_rejects_other_bodies() {
        let mut raw: serde_json::Value = serde_json::from_str(CANARY).unwrap();
        raw["Chain"]["FutureField"] = serde_json::json!({"x": 1});
        raw["Chain"]["Targets"]["v1.inventory.default.dc1"]["Subset"]["Filter"] =
            serde_json::Value::Null;
        let router = raw["Chain"]["StartNode"].as_str().unwrap().to_owned();
        raw["Chain"]["Nodes"][&router]["Routes"][0]["Definition"]["Destination"]
            ["RetryOnStatusCodes"] = serde_json::Value::Null;
        let chain = DiscoveryChain::parse(raw.to_string().as_bytes()).unwrap();
        assert_eq!(chain.targets["v1.inventory.default.dc1"].subset.filter, "");

        for body in [&b""[..], b"[]", b"{}", b"{\"Chain\": null}", b"<html>"] {
            assert!(
                DiscoveryChain::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let mut unknown: serde_json::Value = serde_json::from_str(DEFAULT).unwrap();
        unknown["Chain"]["Nodes"]["resolver:payments.default.dc1"]["Type"] =
            serde_json::json!("teleporter");
        assert!(DiscoveryChain::parse(unknown.to_string().as_bytes()).is_err());
    }

    #[test]
    fn the_default_chain_has_one_resolver_and_one_target() {
        let chain = DiscoveryChain::default_for("payments");
        let resolver = resolver(&chain, &chain.start_node);
        assert!(resolver.default);
        assert_eq!(chain.targets[&resolver.target].service, "payments");
    }
}
