//! The engine's Consul agent, for real (Consul 1.8.7 from the project's
//! tools): the secure posture is HTTPS only, default-deny and bootstrapped
//! with the mesh's policies and tokens, which survive a restart; the plain
//! posture is HTTP without ACLs; a taken port is refused; a stop reaps it and
//! frees its port. HTTP through ureq, as the engine's caller would.

use std::{
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use localenv::{
    consul::{ConsulOptions, LocalConsul, Posture},
    CallError, Cancel, ConsulCalls, Error,
};
use serde_json::Value;

/// `consul` from the project's tools folder (`scripts/install-tools`); a
/// missing tool fails the test.
fn consul() -> PathBuf {
    let dir = std::env::var_os("MESH_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools"));
    let path = dir.join("bin/consul");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-tools",
        path.display()
    );
    path
}

/// HTTP(S) to one agent with one token.
struct Client {
    agent: ureq::Agent,
    url: String,
    token: String,
}

impl Client {
    fn new(url: &str, ca_file: Option<&Path>, token_file: Option<&Path>) -> Self {
        let mut config = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5)));
        if let Some(ca_file) = ca_file {
            let pem = std::fs::read(ca_file).expect("the CA");
            let ca = ureq::tls::Certificate::from_pem(&pem)
                .expect("PEM")
                .to_owned();
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
                    .build(),
            );
        }
        Self {
            agent: config.build().new_agent(),
            url: url.to_owned(),
            token: token_file
                .map(|file| {
                    std::fs::read_to_string(file)
                        .expect("token")
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default(),
        }
    }

    fn put_status(&self, path: &str, body: &Value) -> u16 {
        self.agent
            .put(format!("{}{path}", self.url))
            .header("X-Consul-Token", &self.token)
            .config()
            .http_status_as_error(false)
            .build()
            .send(body.to_string())
            .expect("an answer")
            .status()
            .as_u16()
    }

    fn status(&self, path: &str) -> Result<u16, ureq::Error> {
        let answer = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("X-Consul-Token", &self.token)
            .config()
            .http_status_as_error(false)
            .build()
            .call()?;
        Ok(answer.status().as_u16())
    }
}

impl ConsulCalls for Client {
    fn get(&self, path: &str) -> Result<Value, CallError> {
        let mut answer = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("X-Consul-Token", &self.token)
            .call()
            .map_err(CallError::new)?;
        answer.body_mut().read_json().map_err(CallError::new)
    }

    fn put(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let mut answer = self
            .agent
            .put(format!("{}{path}", self.url))
            .header("X-Consul-Token", &self.token)
            .send(body.to_string())
            .map_err(CallError::new)?;
        answer.body_mut().read_json().map_err(CallError::new)
    }

    fn delete(&self, path: &str) -> Result<(), CallError> {
        self.agent
            .delete(format!("{}{path}", self.url))
            .header("X-Consul-Token", &self.token)
            .call()
            .map(drop)
            .map_err(CallError::new)
    }
}

fn options(posture: Posture, dir: &Path) -> ConsulOptions {
    let mut options = ConsulOptions::new(consul(), posture, dir);
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
    let master = Client::new(
        &endpoint.url,
        endpoint.ca_file.as_deref(),
        endpoint.token_file.as_deref(),
    );
    let issued = agent.wait_ready(&master, &Cancel::default()).unwrap();
    let names: Vec<&str> = issued.iter().map(|token| token.name).collect();
    assert_eq!(
        names,
        [
            "users",
            "inventory",
            "payments",
            "orders",
            "mesh-read",
            "agent"
        ]
    );

    // The configuration holds the management token: private.
    let config = dir.path().join("consul/agent.json");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // HTTPS only: plain HTTP on the API port gets no answer from Consul.
    let plain = Client::new(&agent.url().replace("https://", "http://"), None, None);
    let answer = plain.status("/v1/status/leader");
    assert!(
        answer.is_err() || answer.as_ref().is_ok_and(|status| *status == 400),
        "{answer:?}"
    );
    // Default deny: no token may not read ACLs or write anything; the
    // read-only token reads the catalog but may not register.
    let anonymous = Client::new(&endpoint.url, endpoint.ca_file.as_deref(), None);
    assert_eq!(anonymous.status("/v1/acl/policies").unwrap(), 403);
    let read_only = Client::new(
        &endpoint.url,
        endpoint.ca_file.as_deref(),
        agent.token_file("mesh-read").as_deref(),
    );
    assert_eq!(read_only.status("/v1/catalog/services").unwrap(), 200);
    let registration = serde_json::json!({"Name": "users", "ID": "users-x", "Port": 1});
    assert_eq!(
        read_only.put_status("/v1/agent/service/register", &registration),
        403
    );
    let users = Client::new(
        &endpoint.url,
        endpoint.ca_file.as_deref(),
        agent.token_file("users").as_deref(),
    );
    assert_eq!(
        users.put_status("/v1/agent/service/register", &registration),
        200
    );

    // The description names every file a client needs.
    let description = agent.description();
    assert_eq!(description.url, endpoint.url);
    assert_eq!(description.ca_file, endpoint.ca_file);
    assert_eq!(description.tokens.len(), 7);
    assert!(description.tokens.values().all(|file| file.is_file()));

    // A restart forgets everything; the same tokens come back.
    let before = std::fs::read_to_string(agent.token_file("orders").unwrap()).unwrap();
    let again = agent.restart(&master, &Cancel::default()).unwrap();
    assert_eq!(again.len(), 6);
    assert_eq!(
        std::fs::read_to_string(agent.token_file("orders").unwrap()).unwrap(),
        before
    );
    let orders = Client::new(
        &endpoint.url,
        endpoint.ca_file.as_deref(),
        agent.token_file("orders").as_deref(),
    );
    assert_eq!(orders.status("/v1/health/service/users").unwrap(), 200);

    // Stopped: reaped, its port free.
    let port = agent.ports().api;
    let pid = agent.pid();
    let stopped = agent.stop().unwrap();
    assert!(!stopped.killed, "it needed SIGKILL");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
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
    let client = Client::new(&endpoint.url, None, None);
    assert!(agent
        .wait_ready(&client, &Cancel::default())
        .unwrap()
        .is_empty());
    // ACLs off: Consul says so (401, "ACL support disabled").
    assert_eq!(client.status("/v1/acl/policies").unwrap(), 401);
    assert!(agent.description().tokens.is_empty());

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut busy = options(Posture::Plain, &dir.path().join("other"));
    busy.api_port = Some(taken.local_addr().unwrap().port());
    let error = LocalConsul::spawn(busy).unwrap_err();
    assert!(matches!(error, Error::PortTaken { .. }), "{error}");
    drop(agent);
}

#[test]
fn an_agent_that_cannot_start_fails_the_wait_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(Posture::Plain, dir.path());
    // An unknown log level: Consul refuses to start.
    options.log_level = Some("shouting".to_owned());
    let mut agent = LocalConsul::spawn(options).unwrap();
    let client = Client::new(&agent.url(), None, None);
    let error = agent
        .wait_ready(&client, &Cancel::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("consul exited") && error.contains("shouting"),
        "{error}"
    );
}
