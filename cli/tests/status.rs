//! `mesh status`: the table Consul's health API gives, and its exit codes
//! (0 all fine, 1 something critical, 2 Consul unreachable).

mod common;

use std::time::Duration;

use common::{mesh, stderr, stdout};
use testkit::{free_port, wait_until, ConsulAgent, ServiceOptions, ServiceProcess};

fn options(agent: &ConsulAgent, instance: &str) -> ServiceOptions {
    ServiceOptions {
        consul: Some(agent.http_addr()),
        instance_id: Some(instance.to_owned()),
        args: vec!["--check-interval-ms".into(), "500".into()],
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
