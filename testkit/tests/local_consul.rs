//! The `localenv` engine's Consul agent (what `ConsulAgent` and `mesh up`
//! run), for real, through its own API: the secure posture is HTTPS only,
//! default-deny and bootstrapped with the mesh's policies and tokens, which
//! survive a restart; the plain posture is HTTP without ACLs; a taken port is
//! refused; an agent that cannot start fails with its log; a stop reaps it and
//! frees its port. The engine's calls go through the harness's client.

use std::{
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::Path,
};

use localenv::{
    consul::{ConsulOptions, LocalConsul, Posture},
    Cancel, Error,
};
use testkit::{tool, AgentClient};

/// `client` as `holder`'s token of `agent`.
fn as_holder(client: &AgentClient, agent: &LocalConsul, holder: &str) -> AgentClient {
    let file = agent.token_file(holder).expect("a token file");
    let token = std::fs::read_to_string(file).expect("token");
    client.with_token(Some(token.trim()))
}

fn options(posture: Posture, dir: &Path) -> ConsulOptions {
    let mut options = ConsulOptions::new(tool("consul"), posture, dir);
    options.ui = false;
    options.log_level = Some("warn".to_owned());
    options
}

#[test]
fn the_secure_agent_is_https_only_default_deny_and_keeps_its_tokens_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = LocalConsul::spawn(options(Posture::Secure, dir.path())).unwrap();
    let endpoint = agent.endpoint();
    assert!(
        endpoint.url.starts_with("https://127.0.0.1:"),
        "{endpoint:?}"
    );
    let master = AgentClient::for_endpoint(&endpoint);
    let issued = agent.wait_ready(&master, &Cancel::default()).unwrap();
    let names: Vec<&str> = issued.iter().map(|token| token.name).collect();
    let expected: Vec<&str> = localenv::acl::TOKENS
        .iter()
        .map(|token| token.name)
        .collect();
    assert_eq!(names, expected, "a token for every holder, in order");

    // The configuration holds the management token: private.
    let config = dir.path().join("consul/agent.json");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // HTTPS only: plain HTTP on the API port gets no answer from Consul.
    let plain = AgentClient::new(&agent.url().replace("https://", "http://"), None, None);
    let answer = plain.status("GET", "/v1/status/leader", None);
    assert!(
        answer.is_err() || answer.as_ref().is_ok_and(|status| *status == 400),
        "{answer:?}"
    );
    // Default deny: no token may not read ACLs; the read-only token reads
    // the catalog but may not register; a service's own token may.
    let anonymous = master.with_token(None);
    assert_eq!(
        anonymous.status("GET", "/v1/acl/policies", None).unwrap(),
        403
    );
    let read_only = as_holder(&master, &agent, "mesh-read");
    assert_eq!(
        read_only
            .status("GET", "/v1/catalog/services", None)
            .unwrap(),
        200
    );
    let register = |client: &AgentClient| {
        let registration = r#"{"Name": "users", "ID": "users-x", "Port": 1}"#;
        client
            .status("PUT", "/v1/agent/service/register", Some(registration))
            .unwrap()
    };
    assert_eq!(register(&read_only), 403);
    assert_eq!(register(&as_holder(&master, &agent, "users")), 200);

    // The description names every file a client needs.
    let description = agent.description();
    assert_eq!(description.url, endpoint.url);
    assert_eq!(description.ca_file, endpoint.ca_file);
    // Every holder's token plus the management token.
    assert_eq!(description.tokens.len(), localenv::acl::TOKENS.len() + 1);
    assert!(description.tokens.values().all(|file| file.is_file()));

    // A restart forgets everything; the same tokens come back.
    let before = std::fs::read_to_string(agent.token_file("orders").unwrap()).unwrap();
    let again = agent.restart(&master, &Cancel::default()).unwrap();
    assert_eq!(again.len(), localenv::acl::TOKENS.len());
    assert_eq!(
        std::fs::read_to_string(agent.token_file("orders").unwrap()).unwrap(),
        before
    );
    let orders = as_holder(&master, &agent, "orders");
    assert_eq!(
        orders
            .status("GET", "/v1/health/service/users", None)
            .unwrap(),
        200
    );

    // Stopped: reaped, its port free.
    let port = agent.ports().api;
    let pid = agent.pid();
    let stopped = agent.stop().unwrap();
    assert!(!stopped.killed, "it needed SIGKILL");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} not reaped"
    );
}

#[test]
fn the_plain_agent_serves_http_without_acls_and_a_taken_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = LocalConsul::spawn(options(Posture::Plain, dir.path())).unwrap();
    let endpoint = agent.endpoint();
    assert!(
        endpoint.url.starts_with("http://127.0.0.1:"),
        "{endpoint:?}"
    );
    assert_eq!(
        (endpoint.ca_file.as_ref(), endpoint.token_file.as_ref()),
        (None, None)
    );
    let client = AgentClient::for_endpoint(&endpoint);
    assert!(agent
        .wait_ready(&client, &Cancel::default())
        .unwrap()
        .is_empty());
    // ACLs off: Consul says so (401, "ACL support disabled").
    assert_eq!(client.status("GET", "/v1/acl/policies", None).unwrap(), 401);
    assert!(agent.description().tokens.is_empty());

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut busy = options(Posture::Plain, &dir.path().join("other"));
    busy.api_port = Some(taken.local_addr().unwrap().port());
    let error = LocalConsul::spawn(busy).unwrap_err();
    assert!(matches!(error, Error::PortTaken { .. }), "{error}");
}

#[test]
fn an_agent_that_cannot_start_fails_the_wait_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(Posture::Plain, dir.path());
    // An unknown log level: Consul refuses to start.
    options.log_level = Some("shouting".to_owned());
    let mut agent = LocalConsul::spawn(options).unwrap();
    let client = AgentClient::for_endpoint(&agent.endpoint());
    let error = agent
        .wait_ready(&client, &Cancel::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("consul exited") && error.contains("shouting"),
        "{error}"
    );
}
