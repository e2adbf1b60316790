//! No crate depends on one above it: the workspace's crates sit in layers,
//! from the local-environment engine at the bottom to the two binaries at
//! the top, and every dependency between them (normal, dev or build) points
//! to a lower layer — a crate's own tests excepted (`mesh` tests itself with
//! a feature on). Read from `cargo metadata`, so a new dependency is checked
//! as soon as it is written; a new crate fails here until it has a layer.

use std::{collections::BTreeMap, process::Command};

/// Bottom to top. Crates of one layer do not depend on each other.
const LAYERS: &[&[&str]] = &[
    // Starts and stops local Consul agents; knows nothing of the mesh.
    &["localenv"],
    // The harness tests use (real processes, a Consul agent from localenv).
    &["testkit"],
    // Consul: discovery, Connect, config.
    &["discovery"],
    // The mesh library: client, server, config.
    &["mesh"],
    // Events through a broker: the broker interface and its Redis and
    // RabbitMQ adapters, for the services that publish or consume.
    &["events"],
    // Every crate under `services/` (see [`SERVICES`]), and the data the
    // demo and benchmarks seed.
    &[SERVICES, "fixtures"],
    // The operator's command (and the library it shares with the lab).
    &["mesh-cli"],
    // The benchmark lab.
    &["mesh-bench"],
];

/// Stands for every crate whose manifest is under `services/`: a new
/// service needs no line here.
const SERVICES: &str = "services/*";

/// The layer of a workspace crate, from its name (or, for a service, where
/// its manifest is).
fn layer_of(name: &str, manifests: &BTreeMap<&str, &str>) -> Option<usize> {
    let key = match manifests.get(name) {
        Some(path) if path.contains("/services/") => SERVICES,
        _ => name,
    };
    LAYERS.iter().position(|layer| layer.contains(&key))
}

#[test]
fn no_crate_depends_on_one_at_or_above_its_own_layer() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let workspace: BTreeMap<&str, &serde_json::Value> = packages
        .iter()
        .filter_map(|package| Some((package["name"].as_str()?, package)))
        .collect();
    let manifests: BTreeMap<&str, &str> = workspace
        .iter()
        .filter_map(|(name, package)| Some((*name, package["manifest_path"].as_str()?)))
        .collect();

    let mut wrong = Vec::new();
    for (name, package) in &workspace {
        let Some(own) = layer_of(name, &manifests) else {
            wrong.push(format!("{name} has no layer in tests/crate_layers.rs"));
            continue;
        };
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let Some(target) = dependency["name"].as_str() else {
                continue;
            };
            if !workspace.contains_key(target) || target == *name {
                continue;
            }
            match layer_of(target, &manifests) {
                Some(layer) if layer < own => {}
                _ => wrong.push(format!(
                    "{name} (layer {own}) depends on {target} (layer {:?})",
                    layer_of(target, &manifests)
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_layers_name_each_crate_once() {
    let mut seen = BTreeMap::new();
    for (index, layer) in LAYERS.iter().enumerate() {
        for name in *layer {
            assert!(
                seen.insert(*name, index).is_none(),
                "{name} is in two layers"
            );
        }
    }
}
