//! Records the Consul answers the unit tests parse, from a real agent:
//! `cargo run -p discovery --example record_fixtures` rewrites
//! `discovery/tests/fixtures/*.json`.
//!
//! Registers, against a throwaway `consul agent -dev` (testkit), instances of
//! `fixture` checked over gRPC by real `tonic_health` servers: one on
//! 127.0.0.1, one on ::1, one registered without an address (Consul then
//! leaves `Service.Address` empty and the node's address applies) and one whose
//! check fails.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{net::IpAddr, path::PathBuf, time::Duration};

use discovery::Registrar;

const GRPC_SERVICE: &str = "fixture.v1.Fixture";

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let agent = common::blocking(testkit::ConsulAgent::start);
    let config = common::config(&agent);
    let v4 = common::HealthServer::start(IpAddr::from([127, 0, 0, 1]), GRPC_SERVICE).await;
    let v6 = common::HealthServer::start("::1".parse().expect("ipv6"), GRPC_SERVICE).await;

    let mut first = common::registration("fixture-v4", "fixture", &v4);
    first.tags = vec!["v1".into(), "primary".into()];
    let second = common::registration("fixture-v6", "fixture", &v6);
    let handles = [first, second].map(|registration| {
        Registrar::spawn(config.clone(), registration, common::registrar_options())
    });

    let no_address = serde_json::json!({
        "ID": "fixture-nodeaddr",
        "Name": "fixture",
        "Port": v4.addr.port(),
        "Meta": {"instance": "nodeaddr"},
        "Check": {"GRPC": format!("{}/{GRPC_SERVICE}", v4.addr), "Interval": "1s", "Timeout": "1s"}
    });
    let critical = serde_json::json!({
        "ID": "fixture-critical",
        "Name": "fixture",
        "Address": "127.0.0.1",
        "Port": testkit::free_port(),
        "Tags": ["broken"],
        "Check": {"GRPC": format!("127.0.0.1:{}/{GRPC_SERVICE}", testkit::free_port()), "Interval": "1s", "Timeout": "1s"}
    });
    for body in [no_address, critical] {
        agent
            .put_text("/v1/agent/service/register", &body.to_string())
            .expect("register");
    }
    common::blocking(|| {
        agent.wait_passing("fixture", 3, Duration::from_secs(20));
        testkit::wait_until("the broken check to run", Duration::from_secs(20), || {
            let all = agent.get_json("/v1/health/service/fixture");
            let checks = all
                .as_array()?
                .iter()
                .find(|entry| entry["Service"]["ID"] == "fixture-critical")?["Checks"]
                .clone();
            checks
                .as_array()?
                .iter()
                .any(|check| check["Type"] == "grpc" && check["Status"] == "critical")
                .then_some(())
        });
    });

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::create_dir_all(&dir).expect("fixtures dir");
    for (file, path) in [
        (
            "health_service_passing.json",
            "/v1/health/service/fixture?passing",
        ),
        ("health_service_all.json", "/v1/health/service/fixture"),
        (
            "health_service_empty.json",
            "/v1/health/service/nonexistent?passing",
        ),
        ("agent_service.json", "/v1/agent/service/fixture-v4"),
    ] {
        let text = agent.get_text(path).expect("GET");
        std::fs::write(dir.join(file), &text).expect("write fixture");
        println!("{file}: {path} ({} bytes)", text.len());
    }
    for handle in handles {
        handle.deregister().await.expect("deregister");
    }
}
