//! The harness's own behaviour: real PostgreSQL and Consul come up and go away.

use testkit::{ConsulAgent, Postgres};

#[test]
fn postgres_starts_creates_databases_and_answers_queries() {
    let postgres = Postgres::start();
    let url = postgres.create_database("users");
    assert!(url.ends_with("/users"), "{url}");
    let output = postgres.psql("users", "SELECT 40 + 2");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "42");
}

#[test]
fn consul_agent_restarts_on_the_same_port_with_empty_state() {
    let mut agent = ConsulAgent::start();
    let address = agent.http_addr();
    assert!(agent.get_json("/v1/agent/self")["Config"].is_object());
    agent.restart();
    assert_eq!(agent.http_addr(), address);
    assert!(agent.registered_ids("users").is_empty());
    agent.kill();
    assert!(agent.get_text("/v1/status/leader").is_err());
}
