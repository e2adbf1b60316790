//! `mesh status`: the table Consul's health API gives, and its exit codes
//! (0 all fine, 1 something critical, 2 Consul unreachable); in a checkout
//! where `mesh up` described its (secure) agent, it finds it by itself.

mod common;

use std::time::Duration;

use common::{mesh, mesh_in, stderr, stdout};
use testkit::{free_port, wait_until, ConsulAgent, ServiceOptions, ServiceProcess};

fn options(agent: &ConsulAgent, instance: &str) -> ServiceOptions {
    ServiceOptions {
        consul: Some(agent.http_addr()),
        instance_id: Some(instance.to_owned()),
        args: vec!["--check-interval".into(), "500".into()],
        ..ServiceOptions::default()
    }
}

/// The table line of `instance`.
fn line_of<'a>(table: &'a str, instance: &str) -> &'a str {
    table
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(instance))
        .unwrap_or_else(|| panic!("no row for {instance}:\n{table}"))
}

#[test]
fn status_lists_passing_instances_and_exits_1_once_one_is_killed() {
    let agent = ConsulAgent::start();
    let _users = ServiceProcess::start("users", options(&agent, "a"));
    let mut inventory = ServiceProcess::start("inventory", options(&agent, "b"));
    agent.wait_passing("users", 1, Duration::from_secs(30));
    agent.wait_passing("inventory", 1, Duration::from_secs(30));

    let consul = agent.http_addr();
    let output = mesh(&["status", "--consul-addr", &consul]);
    let table = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{table}{}", stderr(&output));
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["SERVICE", "INSTANCE", "ADDRESS", "STATUS", "VERSION", "OUTPUT"]
    );
    let users = line_of(&table, "users-a");
    assert!(users.starts_with("users "), "{users}");
    assert!(
        users.contains(&format!("127.0.0.1:{}", _users.port)),
        "{users}"
    );
    // VERSION is Meta.version: `--version-meta`, v1 unless set.
    assert!(
        users.contains("passing") && users.split_whitespace().nth(4) == Some("v1"),
        "{users}"
    );
    assert!(
        line_of(&table, "inventory-b").contains("passing"),
        "{table}"
    );
    assert!(
        !table.contains("\nconsul "),
        "Consul's own service is listed:\n{table}"
    );

    // SIGKILL: no deregistration, the gRPC check fails → critical, exit 1.
    inventory.child.kill();
    let table = wait_until("mesh status to exit 1", Duration::from_secs(30), || {
        let output = mesh(&["status", "--consul-addr", &consul]);
        (output.status.code() == Some(1)).then(|| stdout(&output))
    });
    let killed = line_of(&table, "inventory-b");
    assert!(killed.contains("critical"), "{table}");
    assert!(line_of(&table, "users-a").contains("passing"), "{table}");
}

#[test]
fn status_exits_2_with_a_clear_message_when_consul_is_unreachable() {
    let nowhere = format!("127.0.0.1:{}", free_port());
    let output = mesh(&["status", "--consul-addr", &nowhere]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let message = stderr(&output);
    assert!(
        message.contains("unreachable") && message.contains(&nowhere),
        "{message}"
    );
}

/// Hardening finding 12: in the secure posture `mesh status` stays as short
/// as before. Run below a folder where `mesh up` described its agent
/// (`.mesh/env.json`), it finds the address, the CA and the read-only token
/// by itself; any Consul variable still wins.
#[test]
fn status_in_a_checkout_finds_the_local_secure_agent_and_variables_still_win() {
    let agent = ConsulAgent::start_secure();
    let registration = serde_json::json!({"Name": "users", "ID": "users-local", "Port": 50051});
    agent
        .put_text("/v1/agent/service/register", &registration.to_string())
        .expect("register");
    let checkout = tempfile::tempdir().expect("temp dir");
    localenv::Description {
        consul: localenv::ConsulDescription {
            url: agent.url(),
            ca_file: agent.ca_file().map(std::path::Path::to_owned),
            tokens: ["mesh-read", "master"]
                .into_iter()
                .map(|holder| (holder.to_owned(), agent.token_file(holder).expect("token")))
                .collect(),
            pid: Some(agent.pid()),
        },
    }
    .write(&checkout.path().join(".mesh"))
    .expect("describe");
    let below = checkout.path().join("services");
    std::fs::create_dir_all(&below).expect("folder");

    let output = mesh_in(&below, &["status"]);
    let table = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{table}{}", stderr(&output));
    assert!(
        line_of(&table, "users-local").starts_with("users "),
        "{table}"
    );

    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut command = std::process::Command::new(testkit::binary("mesh"));
    command
        .arg("status")
        .current_dir(&below)
        .env("CONSUL_HTTP_ADDR", &nowhere);
    let output = testkit::output_within(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(stderr(&output).contains(&nowhere), "{}", stderr(&output));
}
