//! `mesh chain <service> [--method /pkg.Svc/Method] [-H key=value]…`: the
//! service's discovery chain as the mesh client compiles it — routes,
//! splits, resolvers with their failover, each target's healthy instances,
//! what gRPC cannot use — and, given a call, which target it would take and
//! why. Exit 0 when it could be shown, 1 when not (Consul unreachable or
//! refusing, a chain that does not compile).

use std::{fmt::Write as _, process::ExitCode, time::Duration};

use anyhow::Context as _;
use discovery::{ConsulHttp, Resolver, ResolverOptions, Snapshot};
use http::{header::HeaderName, HeaderMap, HeaderValue};

use mesh::{
    client::routing::{RouteParams, RoutingTable, TargetSpec},
    config::MtlsMode,
};
use mesh_cli::metadata::{parse_header, MAX_HEADERS};

/// How long to wait for Consul's answer about each target's instances.
const INSTANCES_TIMEOUT: Duration = Duration::from_secs(5);

/// `mesh chain` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct ChainArgs {
    /// The Consul service whose chain to show, e.g. `inventory`.
    service: String,

    /// Route a call to this method, `/package.Service/Method`, and say which
    /// target it would take and why.
    #[arg(long, value_parser = parse_method)]
    method: Option<String>,

    /// Metadata of that call, `key=value` (repeat for more).
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,

    /// Which instances count, as the mesh's clients see them: `required`
    /// (Connect-native instances, `/v1/health/connect`) or `off`.
    #[arg(long, env = "MESH_MTLS", value_enum, default_value_t = MtlsMode::Required)]
    mtls: MtlsMode,

    /// The Consul agent (a token with service:read on the services of the
    /// chain, and node:read).
    #[command(flatten)]
    consul: mesh::config::ConsulArgs,
}

/// Prints the chain, and the route of a call when one is given.
pub(crate) async fn run(args: ChainArgs) -> anyhow::Result<ExitCode> {
    if args.headers.len() > MAX_HEADERS {
        anyhow::bail!("at most {MAX_HEADERS} -H headers");
    }
    if !args.headers.is_empty() && args.method.is_none() {
        anyhow::bail!("-H describes a call: give its --method too");
    }
    let (consul, _) = mesh_cli::consul_settings::resolve_here(
        &args.consul,
        mesh_cli::consul_settings::Holder::ReadOnly,
    )?;
    let chain = discovery::chain::read(&ConsulHttp::new(&consul), &args.service)
        .await
        .with_context(|| format!("cannot read the discovery chain of {}", args.service))?;
    let table = RoutingTable::compile(&chain)?;
    let instances = instances(&consul, &table, args.mtls == MtlsMode::Required).await;
    let mut text = overview(&table, &instances, consul.address());
    if let Some(method) = &args.method {
        let mut headers = HeaderMap::new();
        for (name, value) in &args.headers {
            headers.append(name.clone(), value.clone());
        }
        text.push('\n');
        text.push_str(&route_of_call(&table, &instances, method, &headers));
    }
    crate::output::print(&text);
    Ok(ExitCode::SUCCESS)
}

/// Consul's view of each target's instances (same order as the table's targets).
async fn instances(
    consul: &discovery::ConsulConfig,
    table: &RoutingTable,
    connect: bool,
) -> Vec<Option<Snapshot>> {
    let watches: Vec<Resolver> = table
        .targets()
        .iter()
        .map(|target| {
            Resolver::spawn(
                consul.clone(),
                &target.service,
                ResolverOptions {
                    connect,
                    filter: target.filter.clone(),
                    only_passing: target.only_passing,
                    ..ResolverOptions::default()
                },
            )
        })
        .collect();
    let mut found = Vec::with_capacity(watches.len());
    for watch in &watches {
        let mut snapshots = watch.subscribe();
        let answered = tokio::time::timeout(
            INSTANCES_TIMEOUT,
            snapshots.wait_for(|snapshot| snapshot.initialized || snapshot.errors > 0),
        )
        .await;
        found.push(match answered {
            Ok(Ok(snapshot)) => Some(snapshot.clone()),
            _ => None,
        });
    }
    found
}

fn overview(table: &RoutingTable, instances: &[Option<Snapshot>], consul: &str) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{}: discovery chain from Consul at {consul} (protocol {})",
        table.service(),
        table.protocol()
    );
    if let Some(router) = table.router() {
        let _ = writeln!(text, "router {router}");
        for route in table.routes() {
            let conditions = if route.conditions.is_empty() {
                "every call".to_owned()
            } else {
                route.conditions.join(" and ")
            };
            let _ = writeln!(
                text,
                "  route {}: {conditions} → {}{}",
                route.number,
                route.to,
                settings(&route.params)
            );
        }
    } else if let Some(start) = table.start() {
        let _ = writeln!(text, "starts at {start}");
    }
    for (name, branches) in table.splitters() {
        let _ = writeln!(text, "splitter {name}");
        for (percent, resolver) in branches {
            let _ = writeln!(
                text,
                "  {percent:6.2} % → resolver {}",
                table.resolvers()[resolver].name
            );
        }
    }
    for resolver in table.resolvers() {
        let _ = write!(text, "resolver {}: ", resolver.name);
        match &resolver.unroutable {
            Some(reason) => {
                let _ = writeln!(text, "not routable ({reason})");
            }
            None => {
                let names: Vec<&str> = resolver
                    .targets
                    .iter()
                    .map(|index| table.targets()[*index].id.as_str())
                    .collect();
                let _ = match names.split_first() {
                    Some((first, [])) => writeln!(text, "{first}"),
                    Some((first, failover)) => {
                        writeln!(
                            text,
                            "{first}, failing over to {}",
                            failover.join(", then ")
                        )
                    }
                    None => writeln!(text, "no target"),
                };
            }
        }
    }
    let _ = writeln!(text, "targets");
    for (target, snapshot) in table.targets().iter().zip(instances) {
        let _ = writeln!(
            text,
            "  {}: {}{} — {}",
            target.id,
            target.display_name(),
            target
                .filter
                .as_ref()
                .map(|filter| format!(" where {filter}"))
                .unwrap_or_default(),
            describe_instances(snapshot.as_ref())
        );
    }
    if !table.unusable().is_empty() {
        let _ = writeln!(text, "not usable by gRPC (left out of the table):");
        for line in table.unusable() {
            let _ = writeln!(text, "  - {line}");
        }
    }
    text
}

/// A route's timeout and retries, when it sets any.
fn settings(params: &RouteParams) -> String {
    let mut parts = Vec::new();
    if let Some(timeout) = params.request_timeout {
        parts.push(format!("timeout {timeout:?}"));
    }
    if let Some(retries) = params.num_retries {
        parts.push(format!("{retries} retries"));
    }
    if !params.retry_on.is_empty() {
        parts.push(format!(
            "also retries {}",
            params.retry_on.names().join(", ")
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn describe_instances(snapshot: Option<&Snapshot>) -> String {
    let Some(snapshot) = snapshot else {
        return "Consul did not answer".to_owned();
    };
    if let Some(refused) = &snapshot.refused {
        return format!("REFUSED: {refused}");
    }
    if !snapshot.initialized {
        return format!(
            "Consul did not answer ({})",
            snapshot.last_error.as_deref().unwrap_or("no answer")
        );
    }
    match snapshot.endpoints.len() {
        0 => "no healthy instance".to_owned(),
        count => format!(
            "{count} healthy instance{} ({})",
            if count == 1 { "" } else { "s" },
            snapshot
                .endpoints
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Which target a call would take, and why.
fn route_of_call(
    table: &RoutingTable,
    instances: &[Option<Snapshot>],
    method: &str,
    headers: &HeaderMap,
) -> String {
    let mut text = String::new();
    let metadata: Vec<String> = headers
        .iter()
        .map(|(name, value)| format!("{name}={}", value.to_str().unwrap_or("(binary)")))
        .collect();
    let _ = writeln!(
        text,
        "a call to {method}{}:",
        if metadata.is_empty() {
            " without metadata".to_owned()
        } else {
            format!(" with {}", metadata.join(", "))
        }
    );
    let Some(explained) = table.explain(method, headers) else {
        let _ = writeln!(
            text,
            "  no route matches: the call fails with UNIMPLEMENTED"
        );
        return text;
    };
    for check in &explained.checks {
        let _ = match &check.failed {
            Some(failed) => writeln!(
                text,
                "  route {}: no ({failed} does not hold)",
                check.number
            ),
            None => writeln!(
                text,
                "  route {}: matches{}",
                check.number,
                settings(&explained.params)
            ),
        };
    }
    if let Some(splitter) = &explained.splitter {
        let _ = writeln!(text, "  splitter {splitter} picks at random, per call:");
    }
    for (percent, resolver) in &explained.choices {
        let spec = &table.resolvers()[*resolver];
        let prefix = if explained.splitter.is_some() {
            format!("    {percent:6.2} % → ")
        } else {
            "  → ".to_owned()
        };
        let _ = writeln!(
            text,
            "{prefix}{}",
            destination(table, instances, &spec.targets, spec.unroutable.as_deref())
        );
    }
    text
}

/// Where a resolver sends a call now: its target, or the failover target
/// Consul lists instances of.
fn destination(
    table: &RoutingTable,
    instances: &[Option<Snapshot>],
    targets: &[usize],
    unroutable: Option<&str>,
) -> String {
    if let Some(reason) = unroutable {
        return format!("nowhere: {reason}");
    }
    let name = |index: usize| {
        let target: &TargetSpec = &table.targets()[index];
        format!("{} ({})", target.id, target.display_name())
    };
    let mut passed_over = Vec::new();
    for (position, &index) in targets.iter().enumerate() {
        let snapshot = instances[index].as_ref();
        match snapshot {
            Some(snapshot) if snapshot.refused.is_some() && position == 0 => {
                return format!(
                    "{}: REFUSED by Consul, the call fails with PERMISSION_DENIED (no failover)",
                    name(index)
                );
            }
            Some(snapshot) if snapshot.initialized && snapshot.endpoints.is_empty() => {
                passed_over.push(name(index));
            }
            Some(snapshot) if snapshot.refused.is_some() => passed_over.push(name(index)),
            _ => {
                let why = if passed_over.is_empty() {
                    describe_instances(snapshot)
                } else {
                    format!(
                        "failover: {} {} no healthy instance",
                        passed_over.join(", "),
                        if passed_over.len() == 1 {
                            "has"
                        } else {
                            "have"
                        }
                    )
                };
                return format!("{} — {why}", name(index));
            }
        }
    }
    let first = targets
        .first()
        .map(|index| name(*index))
        .unwrap_or_default();
    format!("{first} — no healthy instance anywhere: the call fails with UNAVAILABLE")
}

/// `/package.Service/Method`.
fn parse_method(text: &str) -> Result<String, String> {
    let valid = text.starts_with('/')
        && text.len() <= 512
        && text[1..].split_once('/').is_some_and(|(service, method)| {
            !service.is_empty() && !method.is_empty() && !method.contains('/')
        });
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a gRPC method path like /mesh.inventory.v1.Inventory/GetItem"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> RoutingTable {
        let body = include_bytes!("../../discovery/tests/fixtures/chain_canary.json");
        RoutingTable::compile(&discovery::chain::DiscoveryChain::parse(body).unwrap()).unwrap()
    }

    fn snapshot(ids: &[&str]) -> Option<Snapshot> {
        let endpoints = ids
            .iter()
            .map(|id| {
                let endpoint = discovery::Endpoint {
                    id: (*id).to_owned(),
                    service: "inventory".into(),
                    address: "127.0.0.1:1".parse().unwrap(),
                    tags: vec![],
                    meta: Default::default(),
                    node: "n".into(),
                };
                ((*id).to_owned(), endpoint)
            })
            .collect();
        Some(Snapshot {
            endpoints: std::sync::Arc::new(endpoints),
            initialized: true,
            ..Snapshot::default()
        })
    }

    fn canary_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", HeaderValue::from_static("1"));
        headers
    }

    #[test]
    fn explains_the_canary_route_and_a_failover() {
        let table = canary();
        let ids: Vec<&str> = table.targets().iter().map(|t| t.id.as_str()).collect();
        let v2_first = ids[0] == "v2.inventory.default.dc1";
        let (v1, v2) = (snapshot(&["inventory-1"]), snapshot(&["inventory-3"]));
        let both = if v2_first {
            [v2.clone(), v1.clone()]
        } else {
            [v1.clone(), v2.clone()]
        };
        let method = "/mesh.inventory.v1.Inventory/GetItem";
        let text = route_of_call(&table, &both, method, &canary_headers());
        assert!(text.contains("route 1: matches"), "{text}");
        assert!(text.contains("v2.inventory.default.dc1 (inventory (subset v2)) — 1 healthy instance (inventory-3)"), "{text}");

        let v2_gone = snapshot(&[]);
        let failing = if v2_first {
            [v2_gone, v1]
        } else {
            [v1, v2_gone]
        };
        let text = route_of_call(&table, &failing, method, &canary_headers());
        assert!(
            text.contains("v1.inventory.default.dc1 (inventory (subset v1)) — failover: v2.inventory.default.dc1 (inventory (subset v2)) has no healthy instance"),
            "{text}"
        );

        let text = route_of_call(&table, &both, method, &HeaderMap::new());
        assert!(
            text.contains("route 1: no (x-canary is \"1\" does not hold)"),
            "{text}"
        );
        assert!(text.contains("route 2: matches"), "{text}");
        assert!(
            text.contains("100.00 % → v1.inventory.default.dc1"),
            "{text}"
        );
        assert!(
            text.contains("  0.00 % → v2.inventory.default.dc1"),
            "{text}"
        );
    }

    #[test]
    fn the_overview_lists_routes_splits_resolvers_and_targets() {
        let table = canary();
        let none = vec![snapshot(&["a"]), snapshot(&[])];
        let text = overview(&table, &none, "127.0.0.1:8500");
        for expected in [
            "inventory: discovery chain from Consul at 127.0.0.1:8500 (protocol grpc)",
            "route 1: x-canary is \"1\" → resolver v2.inventory.default.dc1",
            "route 2: path starts with \"/\" → splitter inventory.default",
            "resolver v2.inventory.default.dc1: v2.inventory.default.dc1, failing over to v1.inventory.default.dc1",
            "where Service.Meta.version == \"v1\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn parses_methods() {
        assert!(parse_method("/mesh.inventory.v1.Inventory/GetItem").is_ok());
        for bad in ["GetItem", "/GetItem", "/a/b/c", "//x", "/a/"] {
            assert!(parse_method(bad).is_err(), "{bad}");
        }
    }
}
