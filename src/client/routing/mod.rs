//! Consul's discovery chain compiled into the client's routing table (ADR
//! 0014): an immutable [`RoutingTable`], consulted once per call by
//! [`RoutingTable::decide`] — the first router route whose conditions hold
//! (path and metadata, [`matcher`]), then a weighted splitter choice
//! ([`split`]), ending at a resolver: one target plus its failover targets.
//!
//! What gRPC cannot use (a query-parameter condition, methods other than
//! POST, a path rewrite, targets in another datacenter) is listed in
//! [`RoutingTable::unusable`] and left out; the rest of the chain works.

mod codes;
mod compile;
mod matcher;
mod split;

use std::{sync::Arc, time::Duration};

use http::HeaderMap;

pub use codes::CodeSet;
pub use compile::CompileError;

use matcher::Condition;
use split::Splitter;

/// What a route sets for the calls it takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteParams {
    /// The route's number in its router (1-based); `None` without a router.
    pub route: Option<usize>,
    /// `RequestTimeout`: the call's deadline is the sooner of this and the caller's.
    pub request_timeout: Option<Duration>,
    /// `NumRetries`: attempts are this + 1 (else the client's `max_attempts`).
    pub num_retries: Option<u32>,
    /// `RetryOnStatusCodes`, mapped to gRPC codes: also retried (idempotent methods only).
    pub retry_on: CodeSet,
}

/// Where a route or the chain's start leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A splitter (index into the table's splitters).
    Split(usize),
    /// A resolver (index into the table's resolvers).
    Resolver(usize),
}

/// One route of the router.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) conditions: Vec<Condition>,
    pub(crate) params: Arc<RouteParams>,
    pub(crate) next: Next,
}

/// A resolver: the target calls go to, and where they fail over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSpec {
    /// Consul's node name (`v2.inventory.default.dc1`).
    pub name: String,
    /// Indexes into [`RoutingTable::targets`]: the target first, then the
    /// failover targets in order.
    pub targets: Vec<usize>,
    /// Why calls cannot go there at all (its target is in another datacenter).
    pub unroutable: Option<String>,
}

/// One chain target: a service, or a subset of it, with its own endpoint
/// watch and balancer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetSpec {
    /// Consul's target ID (`v2.inventory.default.dc1`), the metrics label.
    pub id: String,
    /// The Consul service (its SPIFFE identity is what the client dials).
    pub service: String,
    /// The subset name (empty: the whole service).
    pub subset: String,
    /// The subset's filter expression, sent to Consul with the health query.
    pub filter: Option<String>,
    /// The subset's `OnlyPassing`.
    pub only_passing: bool,
    /// The resolver's `ConnectTimeout`; `None` without a `service-resolver`
    /// entry (then the client's `connect_timeout`).
    pub connect_timeout: Option<Duration>,
}

impl TargetSpec {
    /// `inventory`, or `inventory (subset v2)`.
    pub fn display_name(&self) -> String {
        if self.subset.is_empty() {
            self.service.clone()
        } else {
            format!("{} (subset {})", self.service, self.subset)
        }
    }
}

/// The routing decision for one call.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The route's settings (the defaults without a router).
    pub params: Arc<RouteParams>,
    /// The resolver chosen (index into [`RoutingTable::resolvers`]).
    pub resolver: usize,
}

/// One route of the router, for display.
#[derive(Debug, Clone)]
pub struct RouteSummary {
    /// 1-based.
    pub number: usize,
    /// Its conditions, as sentences (none: every call).
    pub conditions: Vec<String>,
    /// Where it sends: `splitter …` or `resolver …`.
    pub to: String,
    /// Its timeout and retry settings.
    pub params: Arc<RouteParams>,
}

/// One router route checked against a call, for explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCheck {
    /// 1-based.
    pub number: usize,
    /// Its conditions, as sentences (none: every call).
    pub conditions: Vec<String>,
    /// The first condition the call does not meet; `None` when the route matched.
    pub failed: Option<String>,
}

/// How a call would be routed, and why.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The routes checked, in order, up to the one that matched.
    pub checks: Vec<RouteCheck>,
    /// The settings of the matching route.
    pub params: Arc<RouteParams>,
    /// The resolvers the call may go to, with the percentage of calls (one at
    /// 100 % without a splitter).
    pub choices: Vec<(f64, usize)>,
    /// The splitter's name, when the call goes through one.
    pub splitter: Option<String>,
}

/// A service's discovery chain, compiled (see the module docs).
#[derive(Debug, Clone)]
pub struct RoutingTable {
    service: String,
    protocol: String,
    router: Option<String>,
    routes: Vec<Route>,
    start: Option<Next>,
    splitters: Vec<Splitter>,
    resolvers: Vec<ResolverSpec>,
    targets: Vec<TargetSpec>,
    unusable: Vec<String>,
    default_params: Arc<RouteParams>,
}

impl RoutingTable {
    /// Compiles a chain Consul served; fails only on a chain that does not
    /// hold together (a node or target it names is missing, a cycle).
    pub fn compile(chain: &discovery::chain::DiscoveryChain) -> Result<Self, CompileError> {
        compile::compile(chain)
    }

    /// The service whose chain this is.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The chain's protocol (`tcp` without `service-defaults`, `grpc`…).
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Every target the chain may send to.
    pub fn targets(&self) -> &[TargetSpec] {
        &self.targets
    }

    /// Every resolver.
    pub fn resolvers(&self) -> &[ResolverSpec] {
        &self.resolvers
    }

    /// What Consul accepted but gRPC cannot use, one sentence each (left out
    /// of the table).
    pub fn unusable(&self) -> &[String] {
        &self.unusable
    }

    /// The router's routes, in order (empty without a router).
    pub fn routes(&self) -> Vec<RouteSummary> {
        self.routes
            .iter()
            .enumerate()
            .map(|(index, route)| RouteSummary {
                number: index + 1,
                conditions: describe(&route.conditions),
                to: self.node_name(route.next),
                params: route.params.clone(),
            })
            .collect()
    }

    /// Each splitter's name and branches (percent of calls, resolver index).
    pub fn splitters(&self) -> Vec<(String, Vec<(f64, usize)>)> {
        self.splitters
            .iter()
            .map(|splitter| (splitter.name.clone(), splitter.percentages()))
            .collect()
    }

    /// Where the chain starts when it has no router (`splitter …`, `resolver …`).
    pub fn start(&self) -> Option<String> {
        self.start.map(|next| self.node_name(next))
    }

    fn node_name(&self, next: Next) -> String {
        match next {
            Next::Split(index) => format!("splitter {}", self.splitters[index].name),
            Next::Resolver(index) => format!("resolver {}", self.resolvers[index].name),
        }
    }

    /// The routing decision for a call to `path` with `headers`: which
    /// route, then which resolver (a weighted random choice at a splitter).
    /// `None` when no route matches (Consul ends every router with a
    /// catch-all, so only for a chain whose catch-all was unusable).
    pub fn decide(&self, path: &str, headers: &HeaderMap) -> Option<Decision> {
        self.decide_with(path, headers, |range| rand::random_range(0..range))
    }

    /// [`RoutingTable::decide`] with the splitter's roll from `roll(range)`.
    pub fn decide_with(
        &self,
        path: &str,
        headers: &HeaderMap,
        roll: impl FnOnce(u32) -> u32,
    ) -> Option<Decision> {
        let (params, next) = match self.start {
            Some(next) => (&self.default_params, next),
            None => {
                let route = self.routes.iter().find(|route| {
                    route
                        .conditions
                        .iter()
                        .all(|condition| condition.holds(path, headers))
                })?;
                (&route.params, route.next)
            }
        };
        let resolver = match next {
            Next::Resolver(resolver) => resolver,
            Next::Split(splitter) => {
                let splitter = &self.splitters[splitter];
                splitter.pick(roll(splitter.total()))
            }
        };
        Some(Decision {
            params: params.clone(),
            resolver,
        })
    }

    /// How a call to `path` with `headers` would be routed, and why
    /// (`mesh chain`). `None` when no route matches.
    pub fn explain(&self, path: &str, headers: &HeaderMap) -> Option<Explanation> {
        let mut checks = Vec::new();
        let (params, next) = match self.start {
            Some(next) => (self.default_params.clone(), next),
            None => {
                let mut matched = None;
                for (index, route) in self.routes.iter().enumerate() {
                    let failed = route
                        .conditions
                        .iter()
                        .find(|condition| !condition.holds(path, headers))
                        .map(Condition::describe);
                    let hit = failed.is_none();
                    checks.push(RouteCheck {
                        number: index + 1,
                        conditions: describe(&route.conditions),
                        failed,
                    });
                    if hit {
                        matched = Some(route);
                        break;
                    }
                }
                let route = matched?;
                (route.params.clone(), route.next)
            }
        };
        let (choices, splitter) = match next {
            Next::Resolver(resolver) => (vec![(100.0, resolver)], None),
            Next::Split(index) => {
                let splitter = &self.splitters[index];
                (splitter.percentages(), Some(splitter.name.clone()))
            }
        };
        Some(Explanation {
            checks,
            params,
            choices,
            splitter,
        })
    }

    /// The router's name, when the chain has one.
    pub fn router(&self) -> Option<&str> {
        self.router.as_deref()
    }
}

fn describe(conditions: &[Condition]) -> Vec<String> {
    conditions.iter().map(Condition::describe).collect()
}
