//! Compiling a [`DiscoveryChain`] into a [`RoutingTable`]: routes with their
//! conditions and settings, splitters flattened, resolvers with their targets
//! and failover targets, each target once.

use std::{collections::HashMap, sync::Arc, time::Duration};

use discovery::chain::{
    ChainNode, ChainRoute, ChainTarget, DiscoveryChain, HttpMatch, ResolverNode, SplitterNode,
};

use super::{
    codes::CodeSet,
    matcher::clip,
    matcher::{header_condition, whole, Condition, PathMatch},
    split::{Branch, Splitter},
    Next, ResolverSpec, Route, RouteParams, RoutingTable, TargetSpec,
};

/// Deeper than this, a chain is taken to loop (Consul's are 3 deep).
const MAX_DEPTH: usize = 16;

/// A chain that does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the discovery chain of {service} cannot be used: {reason}")]
pub struct CompileError {
    /// The chain's service.
    pub service: String,
    /// What is wrong.
    pub reason: String,
}

pub(super) fn compile(chain: &DiscoveryChain) -> Result<RoutingTable, CompileError> {
    let fail = |reason: String| CompileError {
        service: chain.service_name.clone(),
        reason,
    };
    let mut compiler = Compiler {
        chain,
        resolvers: Vec::new(),
        resolver_index: HashMap::new(),
        targets: Vec::new(),
        target_index: HashMap::new(),
        splitters: Vec::new(),
        splitter_index: HashMap::new(),
        timeouts: Vec::new(),
        unusable: Vec::new(),
    };
    let (router, routes, start) = match chain.nodes.get(&chain.start_node) {
        Some(ChainNode::Router(router)) => {
            let routes = router
                .routes
                .iter()
                .enumerate()
                .map(|(index, route)| compiler.route(index + 1, route))
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)?;
            (Some(router.name.clone()), routes, None)
        }
        _ => {
            let next = compiler.next(&chain.start_node, 0).map_err(fail)?;
            (None, Vec::new(), Some(next))
        }
    };
    compiler.assign_connect_timeouts();
    Ok(RoutingTable {
        service: chain.service_name.clone(),
        protocol: chain.protocol.clone(),
        router,
        routes,
        start,
        splitters: compiler.splitters,
        resolvers: compiler.resolvers,
        targets: compiler.targets,
        unusable: compiler.unusable,
        default_params: Arc::new(RouteParams::default()),
    })
}

struct Compiler<'a> {
    chain: &'a DiscoveryChain,
    resolvers: Vec<ResolverSpec>,
    resolver_index: HashMap<String, usize>,
    targets: Vec<TargetSpec>,
    target_index: HashMap<String, usize>,
    splitters: Vec<Splitter>,
    splitter_index: HashMap<String, usize>,
    /// Each `service-resolver`'s ConnectTimeout with its resolver.
    timeouts: Vec<(usize, Duration)>,
    unusable: Vec<String>,
}

impl<'a> Compiler<'a> {
    fn report(&mut self, what: String) {
        let line = format!("{}: {what}", self.chain.service_name);
        if !self.unusable.contains(&line) {
            self.unusable.push(line);
        }
    }

    fn route(&mut self, number: usize, route: &ChainRoute) -> Result<Route, String> {
        let definition = &route.definition;
        let conditions = match definition.matches.as_ref().and_then(|m| m.http.as_ref()) {
            Some(http) => self.conditions(number, http),
            None => Vec::new(),
        };
        let destination = definition.destination.clone().unwrap_or_default();
        if !destination.prefix_rewrite.is_empty() {
            self.report(format!(
                "route {number}: PrefixRewrite {:?} ignored (a gRPC path names the method; the call keeps its path)",
                clip(&destination.prefix_rewrite)
            ));
        }
        let params = RouteParams {
            route: Some(number),
            request_timeout: destination.request_timeout,
            num_retries: (destination.num_retries > 0).then_some(destination.num_retries),
            retry_on: CodeSet::from_http(&destination.retry_on_status_codes),
        };
        Ok(Route {
            conditions,
            params: Arc::new(params),
            next: self.next(&route.next_node, 1)?,
        })
    }

    fn conditions(&mut self, number: usize, http: &HttpMatch) -> Vec<Condition> {
        let mut conditions = Vec::new();
        if !http.path_exact.is_empty() {
            conditions.push(Condition::Path(PathMatch::Exact(http.path_exact.clone())));
        } else if !http.path_prefix.is_empty() {
            conditions.push(Condition::Path(PathMatch::Prefix(http.path_prefix.clone())));
        } else if !http.path_regex.is_empty() {
            conditions.push(match whole(&http.path_regex) {
                Ok(regex) => Condition::Path(PathMatch::Regex(regex, http.path_regex.clone())),
                Err(reason) => self.never(number, reason),
            });
        }
        for header in &http.header {
            let condition = match header_condition(header) {
                Ok(condition) => Condition::Header(condition),
                Err(reason) => self.never(number, reason),
            };
            conditions.push(condition);
        }
        if !http.query_param.is_empty() {
            let names: Vec<String> = http.query_param.iter().map(|q| clip(&q.name)).collect();
            let reason = format!("query parameter {names:?}: a gRPC call has no query string");
            conditions.push(self.never(number, reason));
        }
        if !http.methods.is_empty()
            && !http
                .methods
                .iter()
                .any(|method| method.eq_ignore_ascii_case("POST"))
        {
            let methods: Vec<String> = http.methods.iter().map(|m| clip(m)).collect();
            let reason = format!("methods {methods:?}: a gRPC call is always POST");
            conditions.push(self.never(number, reason));
        }
        conditions
    }

    /// A condition no gRPC call meets, reported.
    fn never(&mut self, number: usize, reason: String) -> Condition {
        self.report(format!(
            "route {number} never matches a gRPC call ({reason}): skipped"
        ));
        Condition::Never(reason)
    }

    fn next(&mut self, key: &str, depth: usize) -> Result<Next, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "the chain is deeper than {MAX_DEPTH} nodes at {key:?} (a cycle?)"
            ));
        }
        match self.chain.nodes.get(key) {
            None => Err(format!("the node {key:?} is missing")),
            Some(ChainNode::Router(_)) => {
                Err(format!("the router {key:?} is not at the chain's start"))
            }
            Some(ChainNode::Resolver(node)) => self.resolver(key, node).map(Next::Resolver),
            Some(ChainNode::Splitter(node)) => self.splitter(key, node, depth),
        }
    }

    fn splitter(&mut self, key: &str, node: &SplitterNode, depth: usize) -> Result<Next, String> {
        if let Some(&index) = self.splitter_index.get(key) {
            return Ok(Next::Split(index));
        }
        let mut branches = Vec::new();
        for split in &node.splits {
            let share = Splitter::share_of(split.weight);
            match self.next(&split.next_node, depth + 1)? {
                Next::Resolver(resolver) => branches.push(Branch { share, resolver }),
                Next::Split(nested) => {
                    // Consul flattens nested splitters; should one remain,
                    // its shares are scaled by this branch's.
                    let nested = &self.splitters[nested];
                    let total = u64::from(nested.total());
                    for branch in nested.branches() {
                        let scaled = u64::from(share) * u64::from(branch.share) / total;
                        branches.push(Branch {
                            share: u32::try_from(scaled).unwrap_or(u32::MAX),
                            resolver: branch.resolver,
                        });
                    }
                }
            }
        }
        let splitter = Splitter::new(&node.name, branches)
            .ok_or_else(|| format!("the splitter {key:?} gives every branch weight 0"))?;
        self.splitters.push(splitter);
        let index = self.splitters.len() - 1;
        self.splitter_index.insert(key.to_owned(), index);
        Ok(Next::Split(index))
    }

    fn resolver(&mut self, key: &str, node: &ResolverNode) -> Result<usize, String> {
        if let Some(&index) = self.resolver_index.get(key) {
            return Ok(index);
        }
        let name = node.name.clone();
        let primary = self.lookup(&node.resolver.target)?;
        let mut spec = ResolverSpec {
            name: name.clone(),
            targets: Vec::new(),
            unroutable: None,
        };
        if let Some(datacenter) = self.elsewhere(primary) {
            let reason = format!(
                "its target {} is in datacenter {datacenter}: the mesh client does not cross datacenters",
                primary.id
            );
            self.report(format!(
                "resolver {name}: {reason}: calls routed there fail"
            ));
            spec.unroutable = Some(reason);
        } else {
            spec.targets.push(self.target(primary));
        }
        let failover = node.resolver.failover.clone().unwrap_or_default();
        for id in &failover.targets {
            let target = self.lookup(id)?;
            if let Some(datacenter) = self.elsewhere(target) {
                self.report(format!(
                    "resolver {name}: failover to {id} skipped (datacenter {datacenter}: the mesh client does not cross datacenters)"
                ));
                continue;
            }
            let index = self.target(target);
            if !spec.targets.contains(&index) {
                spec.targets.push(index);
            }
        }
        self.resolvers.push(spec);
        let index = self.resolvers.len() - 1;
        self.resolver_index.insert(key.to_owned(), index);
        // Without a service-resolver entry the 5 s is Consul's default, not
        // the operator's: the client's own connect timeout applies.
        if let (false, Some(timeout)) = (node.resolver.default, node.resolver.connect_timeout) {
            self.timeouts.push((index, timeout));
        }
        Ok(index)
    }

    fn lookup(&self, id: &str) -> Result<&'a ChainTarget, String> {
        let chain: &'a DiscoveryChain = self.chain;
        chain
            .targets
            .get(id)
            .ok_or_else(|| format!("the target {id:?} is missing"))
    }

    /// The datacenter of a target outside the chain's own.
    fn elsewhere(&self, target: &ChainTarget) -> Option<String> {
        let local = &self.chain.datacenter;
        (!target.datacenter.is_empty() && !local.is_empty() && &target.datacenter != local)
            .then(|| target.datacenter.clone())
    }

    fn target(&mut self, target: &ChainTarget) -> usize {
        if let Some(&index) = self.target_index.get(&target.id) {
            return index;
        }
        let filter = Some(target.subset.filter.trim())
            .filter(|filter| !filter.is_empty())
            .map(str::to_owned);
        self.targets.push(TargetSpec {
            id: target.id.clone(),
            service: target.service.clone(),
            subset: target.service_subset.clone(),
            filter,
            only_passing: target.subset.only_passing,
            connect_timeout: None,
        });
        let index = self.targets.len() - 1;
        self.target_index.insert(target.id.clone(), index);
        index
    }

    /// A resolver's ConnectTimeout dials its own target; a target that is
    /// only a failover elsewhere takes the timeout of the first resolver
    /// that lists it.
    fn assign_connect_timeouts(&mut self) {
        for (resolver, timeout) in &self.timeouts {
            if let Some(&primary) = self.resolvers[*resolver].targets.first() {
                if self.resolvers[*resolver].unroutable.is_none() {
                    self.targets[primary]
                        .connect_timeout
                        .get_or_insert(*timeout);
                }
            }
        }
        for (resolver, timeout) in &self.timeouts {
            let spec = &self.resolvers[*resolver];
            let skip = usize::from(spec.unroutable.is_none());
            for &failover in spec.targets.iter().skip(skip) {
                self.targets[failover]
                    .connect_timeout
                    .get_or_insert(*timeout);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use discovery::chain::DiscoveryChain;
    use http::HeaderMap;
    use tonic::Code;

    use super::super::{RoutingTable, TargetSpec};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/discovery/tests/fixtures");

    fn table(name: &str) -> RoutingTable {
        let path = format!("{FIXTURES}/chain_{name}.json");
        let body = std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
        RoutingTable::compile(&DiscoveryChain::parse(&body).unwrap()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    /// The target a call reaches first (no failover), with a fixed roll.
    fn first_target<'t>(
        table: &'t RoutingTable,
        path: &str,
        pairs: &[(&str, &str)],
        roll: u32,
    ) -> &'t TargetSpec {
        let decision = table
            .decide_with(path, &headers(pairs), |range| roll.min(range - 1))
            .expect("a route matches");
        let resolver = &table.resolvers()[decision.resolver];
        &table.targets()[resolver.targets[0]]
    }

    const GET_ITEM: &str = "/mesh.inventory.v1.Inventory/GetItem";

    #[test]
    fn the_canary_header_goes_to_v2_and_the_rest_through_the_split() {
        let table = table("canary");
        assert!(table.unusable().is_empty(), "{:?}", table.unusable());
        assert_eq!(table.router(), Some("inventory.default"));
        let canary = first_target(&table, GET_ITEM, &[("x-canary", "1")], 0);
        assert_eq!(canary.subset, "v2");
        assert_eq!(
            canary.filter.as_deref(),
            Some(r#"Service.Meta.version == "v2""#)
        );
        assert!(canary.only_passing);
        assert_eq!(canary.connect_timeout, Some(Duration::from_millis(500)));
        for roll in [0, 500_000, 999_999] {
            assert_eq!(
                first_target(&table, GET_ITEM, &[], roll).subset,
                "v1",
                "100/0"
            );
            assert_eq!(
                first_target(&table, GET_ITEM, &[("x-canary", "0")], roll).subset,
                "v1"
            );
        }
        // v2 fails over to v1.
        let decision = table
            .decide(GET_ITEM, &headers(&[("x-canary", "1")]))
            .unwrap();
        let failover: Vec<&str> = table.resolvers()[decision.resolver]
            .targets
            .iter()
            .map(|index| table.targets()[*index].subset.as_str())
            .collect();
        assert_eq!(failover, ["v2", "v1"]);
        assert_eq!(decision.params.route, Some(1));
        assert_eq!(decision.params.request_timeout, None);
    }

    #[test]
    fn unusable_entries_are_reported_once_and_the_rest_routes() {
        let table = table("unusable");
        let reports = table.unusable().join("\n");
        for expected in [
            "route 1 never matches a gRPC call (query parameter [\"debug\"]",
            "route 2 never matches a gRPC call (methods [\"GET\"]",
            "route 3: PrefixRewrite \"/x\" ignored",
            "route 5 never matches a gRPC call (header \"x-trace-bin\"",
            "failover to v1.inventory.default.dc2 skipped (datacenter dc2",
        ] {
            assert!(
                reports.contains(expected),
                "missing {expected:?} in:\n{reports}"
            );
        }
        assert_eq!(table.unusable().len(), 5, "{reports}");

        // Route 1 (QueryParam) and 2 (GET) never take AddStock: the catch-all does.
        let add_stock = "/mesh.inventory.v1.Inventory/AddStock";
        assert_eq!(first_target(&table, add_stock, &[], 0).subset, "v1");
        // Route 3 still routes, without the rewrite.
        let reserve = "/mesh.inventory.v1.Inventory/Reserve";
        assert_eq!(first_target(&table, reserve, &[], 0).subset, "v2");
        // Route 4: regex path, a header that must not start with "ada", another present.
        let route4 = [("x-user", "bob"), ("x-tenant", "t1")];
        let decision = table.decide(GET_ITEM, &headers(&route4)).unwrap();
        assert_eq!(decision.params.route, Some(4));
        assert_eq!(
            decision.params.request_timeout,
            Some(Duration::from_millis(250))
        );
        assert_eq!(decision.params.num_retries, Some(4));
        assert!(decision.params.retry_on.contains(Code::Unavailable));
        assert!(decision.params.retry_on.contains(Code::Unimplemented));
        let ada = [("x-user", "ada"), ("x-tenant", "t1")];
        assert_eq!(
            table.decide(GET_ITEM, &headers(&ada)).unwrap().params.route,
            Some(7),
            "the inverted prefix fails: Consul's catch-all takes it"
        );
        // Route 5 has a -bin condition: it never matches, even with every header.
        let route5 = [
            ("x-region", "west-eu"),
            ("x-build", "42"),
            ("x-trace-bin", "AAAA"),
        ];
        assert_ne!(
            table
                .decide(add_stock, &headers(&route5))
                .unwrap()
                .params
                .route,
            Some(5)
        );
        // Route 6 lists POST among its methods: usable.
        let canary = table
            .decide(add_stock, &headers(&[("x-canary", "1")]))
            .unwrap();
        assert_eq!(canary.params.route, Some(6));
        // v1's failover to dc2 is gone; v1 keeps its own ConnectTimeout.
        let v1 = table
            .resolvers()
            .iter()
            .find(|resolver| resolver.name == "v1.inventory.default.dc1")
            .unwrap();
        assert_eq!(v1.targets.len(), 1);
        assert!(table
            .targets()
            .iter()
            .all(|target| !target.id.ends_with("dc2")));
        assert_eq!(
            table.targets()[v1.targets[0]].connect_timeout,
            Some(Duration::from_millis(1500))
        );
        // A split to another service dials that service.
        let legacy = table
            .targets()
            .iter()
            .find(|t| t.service == "legacy")
            .unwrap();
        assert_eq!(
            legacy.connect_timeout, None,
            "no resolver entry: the client's own"
        );
    }

    #[test]
    fn nested_splits_and_other_services_keep_their_shares() {
        let table = table("nested");
        let explained = table.explain(GET_ITEM, &HeaderMap::new()).unwrap();
        assert!(explained.checks.is_empty(), "no router");
        let shares: Vec<(String, f64)> = explained
            .choices
            .iter()
            .map(|(percent, resolver)| {
                let target = &table.targets()[table.resolvers()[*resolver].targets[0]];
                (target.display_name(), (percent * 100.0).round() / 100.0)
            })
            .collect();
        assert_eq!(
            shares,
            [
                ("inventory (subset v1)".to_owned(), 60.0),
                ("inventory-next".to_owned(), 20.2),
                ("legacy".to_owned(), 19.8),
            ]
        );
    }

    #[test]
    fn a_redirect_is_already_resolved_by_consul() {
        let table = table("redirect");
        let target = first_target(&table, GET_ITEM, &[], 0);
        assert_eq!(
            (target.service.as_str(), target.subset.as_str()),
            ("inventory", "v2")
        );
        assert_eq!(
            target.connect_timeout,
            Some(Duration::from_secs(5)),
            "an explicit resolver entry"
        );
    }

    #[test]
    fn the_default_chain_is_one_target_with_the_clients_connect_timeout() {
        let table = table("default");
        assert_eq!(table.targets().len(), 1);
        let target = first_target(&table, "/any.Service/Method", &[], 0);
        assert_eq!(target.service, "payments");
        assert_eq!(target.filter, None);
        assert!(!target.only_passing);
        assert_eq!(
            target.connect_timeout, None,
            "Consul's 5 s default is not applied"
        );
    }

    #[test]
    fn explains_which_route_matched_and_why_the_others_did_not() {
        let table = table("canary");
        let explained = table
            .explain(GET_ITEM, &headers(&[("x-canary", "2")]))
            .unwrap();
        assert_eq!(explained.checks.len(), 2);
        assert_eq!(
            explained.checks[0].failed.as_deref(),
            Some(r#"x-canary is "1""#)
        );
        assert_eq!(explained.checks[1].failed, None);
        assert_eq!(explained.splitter.as_deref(), Some("inventory.default"));
        assert_eq!(explained.choices.len(), 2);
        assert_eq!(explained.choices[0].0, 100.0);
    }

    #[test]
    fn chains_that_do_not_hold_together_are_refused() {
        let body = std::fs::read(format!("{FIXTURES}/chain_canary.json")).unwrap();
        let chain = DiscoveryChain::parse(&body).unwrap();

        let mut missing = chain.clone();
        missing.nodes.remove("splitter:inventory.default");
        let error = RoutingTable::compile(&missing).unwrap_err();
        assert!(
            error.reason.contains("splitter:inventory.default"),
            "{error}"
        );

        let mut no_target = chain.clone();
        no_target.targets.remove("v1.inventory.default.dc1");
        assert!(RoutingTable::compile(&no_target).is_err());

        let mut looping = chain;
        let splitter = looping.nodes.get_mut("splitter:inventory.default").unwrap();
        if let discovery::chain::ChainNode::Splitter(splitter) = splitter {
            splitter.splits[0].next_node = "splitter:inventory.default".into();
        }
        let error = RoutingTable::compile(&looping).unwrap_err();
        assert!(error.to_string().contains("cycle"), "{error}");
    }
}
