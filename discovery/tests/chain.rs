//! The discovery-chain watch and the subset-aware health watch against a real
//! Consul 1.8.7 agent: config entries reach the watch through blocking
//! queries, the last chain is kept through an outage and replaced after the
//! agent comes back empty; subset filters and `OnlyPassing` select instances
//! as Consul evaluates them; and with ACLs default-deny, a chain or an
//! instance list the token may not read is reported as refused — never as
//! "no instance".

mod common;

use std::{path::Path, time::Duration};

use common::{blocking, config, eventually, resolver_options};
use discovery::{
    chain::{ChainNode, ChainState, ChainWatch, ChainWatchOptions},
    ConsulConfig, ConsulSettings, Resolver, ResolverOptions,
};
use testkit::ConsulAgent;

fn watch_options() -> ChainWatchOptions {
    ChainWatchOptions {
        wait: Duration::from_secs(3),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
    }
}

fn write_entry(agent: &ConsulAgent, entry: serde_json::Value) {
    agent
        .put_text("/v1/config", &entry.to_string())
        .unwrap_or_else(|error| panic!("writing {entry}: {error}"));
}

/// The splitter's weights when the chain starts at one.
fn split_weights(state: &ChainState) -> Option<Vec<f32>> {
    let chain = state.chain.as_ref()?;
    match chain.nodes.get(&chain.start_node)? {
        ChainNode::Splitter(splitter) => {
            Some(splitter.splits.iter().map(|split| split.weight).collect())
        }
        _ => None,
    }
}

/// Registers `id` of `service` with `version` in its meta and a TTL check
/// (set with [`set_check`]); nothing listens: only Consul's view matters here.
fn register(agent: &ConsulAgent, id: &str, service: &str, version: &str, port: u16) {
    let body = serde_json::json!({
        "ID": id,
        "Name": service,
        "Address": "127.0.0.1",
        "Port": port,
        "Meta": {"version": version},
        "Check": {"CheckID": format!("check-{id}"), "TTL": "10m", "Status": "passing"},
    });
    agent
        .put_text("/v1/agent/service/register", &body.to_string())
        .expect("register");
}

/// `pass`, `warn` or `fail` the TTL check of `id`.
fn set_check(agent: &ConsulAgent, id: &str, status: &str) {
    agent
        .put_text(&format!("/v1/agent/check/{status}/check-{id}"), "")
        .expect("update the TTL check");
}

async fn ids(resolver: &Resolver, what: &str, expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|id| (*id).to_owned()).collect();
    eventually(what, Duration::from_secs(20), || async {
        let snapshot = resolver.snapshot();
        let ids: Vec<String> = snapshot.endpoints.keys().cloned().collect();
        (snapshot.initialized && ids == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_follows_config_entries_and_survives_an_outage() {
    let mut agent = blocking(ConsulAgent::start);
    let watch = ChainWatch::spawn(&config(&agent), "inventory", watch_options());
    let first = eventually("the first chain", Duration::from_secs(20), || async {
        watch.state().chain
    })
    .await;
    assert_eq!(first.protocol, "tcp", "no service-defaults yet");
    assert!(first.start_node.starts_with("resolver:"), "{first:?}");

    // A blocking query returns soon after a write.
    write_entry(
        &agent,
        serde_json::json!({"Kind": "service-defaults", "Name": "inventory", "Protocol": "grpc"}),
    );
    write_entry(
        &agent,
        serde_json::json!({
            "Kind": "service-resolver", "Name": "inventory", "DefaultSubset": "v1",
            "Subsets": {
                "v1": {"Filter": "Service.Meta.version == \"v1\"", "OnlyPassing": true},
                "v2": {"Filter": "Service.Meta.version == \"v2\""},
            },
        }),
    );
    let written = std::time::Instant::now();
    write_entry(
        &agent,
        serde_json::json!({
            "Kind": "service-splitter", "Name": "inventory",
            "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}],
        }),
    );
    eventually("the 90/10 split", Duration::from_secs(20), || async {
        (split_weights(&watch.state()) == Some(vec![90.0, 10.0])).then_some(())
    })
    .await;
    eprintln!("splitter write → chain watch: {:?}", written.elapsed());
    let updates = watch.state().updates;
    assert!(updates >= 2, "{updates}");

    // Consul gone: the last chain is kept, flagged stale.
    blocking(|| agent.kill());
    let during = eventually(
        "the watch to notice the outage",
        Duration::from_secs(20),
        || async {
            let state = watch.state();
            state.stale.then_some(state)
        },
    )
    .await;
    assert_eq!(split_weights(&during), Some(vec![90.0, 10.0]));
    assert!(during.last_error.is_some());
    assert_eq!(during.refused, None, "unreachable is not refused");

    // Back with empty state (and lower indexes): the watch starts over.
    blocking(|| agent.restart());
    eventually(
        "the default chain again",
        Duration::from_secs(30),
        || async {
            let state = watch.state();
            let chain = state.chain.as_ref()?;
            (!state.stale && chain.start_node.starts_with("resolver:")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subsets_select_by_filter_and_only_passing() {
    let agent = blocking(ConsulAgent::start);
    register(&agent, "inventory-1", "inventory", "v1", 1001);
    register(&agent, "inventory-2", "inventory", "v1", 1002);
    register(&agent, "inventory-3", "inventory", "v2", 1003);
    let subset = |filter: &str, only_passing: bool| {
        Resolver::spawn(
            config(&agent),
            "inventory",
            ResolverOptions {
                filter: Some(filter.to_owned()),
                only_passing,
                ..resolver_options()
            },
        )
    };
    let v1 = subset(r#"Service.Meta.version == "v1""#, true);
    let v1_warnings_too = subset(r#"Service.Meta.version == "v1""#, false);
    let v2 = subset(r#"Service.Meta.version == "v2""#, false);
    ids(&v1, "v1's instances", &["inventory-1", "inventory-2"]).await;
    ids(&v2, "v2's instance", &["inventory-3"]).await;

    // A warning: out of OnlyPassing subsets, still in the others.
    set_check(&agent, "inventory-2", "warn");
    ids(&v1, "v1 without the warning instance", &["inventory-1"]).await;
    ids(
        &v1_warnings_too,
        "v1 with the warning instance",
        &["inventory-1", "inventory-2"],
    )
    .await;
    // Critical: out of every subset; no instance left is "no instance", not refused.
    set_check(&agent, "inventory-3", "fail");
    ids(&v2, "v2 empty", &[]).await;
    assert_eq!(v2.snapshot().refused, None);
    set_check(&agent, "inventory-3", "pass");
    ids(&v2, "v2 back", &["inventory-3"]).await;
}

fn secure(agent: &ConsulAgent, token: Option<&str>) -> ConsulConfig {
    ConsulSettings {
        address: Some(agent.url()),
        ca_file: agent.ca_file().map(Path::to_owned),
        token: token.map(str::to_owned),
        ..ConsulSettings::default()
    }
    .build()
    .expect("secure config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_token_may_not_read_is_refused_not_empty() {
    let agent = blocking(ConsulAgent::start_secure);
    agent.create_policy(
        "read-inventory",
        "service \"inventory\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }",
    );
    let token = agent.create_token("inventory reader", &["read-inventory"]);
    register(&agent, "legacy-1", "legacy", "v1", 1004);
    let reader = secure(&agent, Some(&token.secret));

    // The chain of a service it may not read: 403, reported as refused.
    let refused = ChainWatch::spawn(&reader, "legacy", watch_options());
    let state = eventually("the refusal", Duration::from_secs(20), || async {
        let state = refused.state();
        state.refused.is_some().then_some(state)
    })
    .await;
    let reason = state.refused.unwrap();
    assert!(reason.contains(r#"service:read on "legacy""#), "{reason}");
    assert!(state.chain.is_none());
    let allowed = ChainWatch::spawn(&reader, "inventory", watch_options());
    eventually("inventory's chain", Duration::from_secs(20), || async {
        allowed.state().chain
    })
    .await;

    // Consul answers legacy's health with an empty list (legacy-1 does pass):
    // the watch says why instead of "no instance".
    let legacy = Resolver::spawn(reader.clone(), "legacy", resolver_options());
    let snapshot = eventually("legacy's answer", Duration::from_secs(20), || async {
        let snapshot = legacy.snapshot();
        snapshot.initialized.then_some(snapshot)
    })
    .await;
    assert!(snapshot.endpoints.is_empty());
    let reason = snapshot.refused.expect("refused, not empty");
    assert!(reason.contains(r#"service:read on "legacy""#), "{reason}");
    assert_eq!(agent.passing_ids("legacy"), ["legacy-1"], "it is there");

    // A readable service without instances is just empty.
    let inventory = Resolver::spawn(reader, "inventory", resolver_options());
    let snapshot = eventually("inventory's answer", Duration::from_secs(20), || async {
        let snapshot = inventory.snapshot();
        snapshot.initialized.then_some(snapshot)
    })
    .await;
    assert!(snapshot.endpoints.is_empty());
    assert_eq!(snapshot.refused, None);
}
