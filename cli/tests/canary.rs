//! `mesh up --canary`, `mesh chain` and `mesh bench`'s per-target counts,
//! as the README's canary walkthrough uses them (Connect mTLS on, the
//! default): one more inventory instance registered as version v2, the
//! shipped config entries in Consul, `mesh chain` explaining why a call with
//! `x-canary: 1` goes to v2, and the split moved to 90/10 seen in the counts.

mod common;

use std::time::Duration;

use common::{mesh, spawn_up, stderr, stdout, wait_for_output};
use testkit::ConsulAgent;

/// Five instances and their certificates from cold start (dev build, shared cores).
const READY_TIMEOUT: Duration = Duration::from_secs(150);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const SPLIT_90_10: &str = include_str!("../../deploy/consul/config/splits/inventory-90-10.json");

/// `mesh bench --json`'s share of calls that went to `target`, percent.
fn share(report: &serde_json::Value, target: &str) -> f64 {
    report["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|share| share["target"] == target)
        .and_then(|share| share["percent"].as_f64())
        .unwrap_or(0.0)
}

#[test]
fn up_with_a_canary_routes_by_the_shipped_chain_and_mesh_chain_explains_it() {
    let agent = ConsulAgent::start();
    let state = tempfile::tempdir().expect("temp dir");
    let consul = agent.http_addr();
    let mut up = spawn_up(
        state.path(),
        &[
            "--consul-addr",
            &consul,
            "--instances",
            "1",
            "--ports",
            "dynamic",
            "--drain",
            "300",
            "--canary",
        ],
        &[],
    );
    wait_for_output(
        &mut up,
        "Canary: inventory-2 is inventory version v2",
        READY_TIMEOUT,
    );

    // Consul has both versions and the entries.
    let entries = agent.get_json("/v1/health/service/inventory?passing");
    let mut versions: Vec<(String, String)> = entries
        .as_array()
        .expect("health entries")
        .iter()
        .map(|entry| {
            (
                entry["Service"]["ID"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                entry["Service"]["Meta"]["version"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        [
            ("inventory-1".to_owned(), "v1".to_owned()),
            ("inventory-2".to_owned(), "v2".to_owned())
        ]
    );
    for kind in ["service-resolver", "service-splitter", "service-router"] {
        let entry = agent.get_json(&format!("/v1/config/{kind}/inventory"));
        assert_eq!(entry["Kind"], kind, "{entry}");
    }
    let defaults = agent.get_json("/v1/config/service-defaults/orders");
    assert_eq!(defaults["Protocol"], "grpc");

    // Why a canary call goes to v2, as the banner says to ask.
    let explained = mesh(&[
        "chain",
        "inventory",
        "--method",
        "/mesh.inventory.v1.Inventory/GetItem",
        "-H",
        "x-canary=1",
        "--consul-addr",
        &consul,
    ]);
    let text = stdout(&explained);
    assert!(explained.status.success(), "{text}{}", stderr(&explained));
    for expected in [
        "route 1: x-canary is \"1\" → resolver v2.inventory.default.dc1",
        "a call to /mesh.inventory.v1.Inventory/GetItem with x-canary=1:",
        "route 1: matches",
        "→ v2.inventory.default.dc1 (inventory (subset v2)) — 1 healthy instance (inventory-2)",
        "100.00 % → resolver v1.inventory.default.dc1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let unknown = mesh(&[
        "chain",
        "inventory",
        "--method",
        "GetItem",
        "--consul-addr",
        &consul,
    ]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("not a gRPC method path"),
        "{}",
        stderr(&unknown)
    );

    // 90/10, as the README applies it; the per-target counts show it.
    agent
        .put_text("/v1/config", SPLIT_90_10)
        .expect("write the 90/10 split");
    let bench = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "bench",
            "--rpc",
            "get-item",
            "--json",
            "--consul-addr",
            &consul,
        ];
        args.extend(extra);
        let output = mesh(&args);
        assert!(
            output.status.success(),
            "{}{}",
            stdout(&output),
            stderr(&output)
        );
        serde_json::from_str(stdout(&output).trim()).expect("one JSON report")
    };
    // The chain watch delivers the write within milliseconds; this bench's
    // own client reads the chain before its first call.
    let split = bench(&["--requests", "2000"]);
    assert_eq!(split["ok"], 2000, "{split}");
    let to_v2 = share(&split, "v2.inventory.default.dc1");
    assert!(
        (6.0..=14.0).contains(&to_v2),
        "v2 took {to_v2} % of 2000: {split}"
    );
    let canary = bench(&["--requests", "200", "-H", "x-canary=1"]);
    assert_eq!(
        share(&canary, "v2.inventory.default.dc1"),
        100.0,
        "{canary}"
    );

    up.child.signal(nix::sys::signal::Signal::SIGINT);
    let status = up.child.wait(STOP_TIMEOUT).expect("mesh up stops");
    assert!(status.success(), "{}", up.log());
}
