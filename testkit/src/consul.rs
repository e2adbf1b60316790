//! A real Consul dev agent on free loopback ports, started by the one
//! local-environment engine (`localenv`) from the same configuration `mesh
//! up` uses: plain (ACLs off, HTTP) or secure (ACLs on with `default_policy =
//! "deny"`, the HTTP API on HTTPS only, certificates from `consul tls ca
//! create` / `consul tls cert create`, the mesh's policies and one token per
//! holder). This file adapts it to the tests: blocking calls with ureq,
//! panics with the agent's log on failure.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use localenv::{
    consul::{ConsulOptions, LocalConsul, Posture},
    Cancel,
};

use crate::{agent_client::AgentClient, paths::tool, ports::free_port, wait::wait_until};

/// A `consul agent -dev` on its own free ports. Dropping it kills and reaps it.
#[derive(Debug)]
pub struct ConsulAgent {
    agent: LocalConsul,
    dir: tempfile::TempDir,
    master_token: Option<String>,
    /// As the master token (or anonymous on a plain agent).
    client: AgentClient,
}

/// A token created with [`ConsulAgent::create_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclToken {
    /// The public AccessorID (to delete it).
    pub accessor: String,
    /// The SecretID: what goes into `X-Consul-Token` and token files.
    pub secret: String,
}

impl ConsulAgent {
    /// Starts an agent (ACLs off, plain HTTP) and waits until it has elected
    /// itself leader.
    pub fn start() -> Self {
        Self::start_with(Posture::Plain)
    }

    /// Starts an agent as production runs Consul — ACLs on with
    /// `default_policy = "deny"`, HTTPS only (no HTTP port), a certificate
    /// from `consul tls cert create -server` signed by a CA from `consul tls
    /// ca create` — waits for its leader, and creates the mesh's policies and
    /// one token per holder ([`ConsulAgent::token_file`]). The harness's own
    /// calls ([`ConsulAgent::get_json`]…) use the master token.
    pub fn start_secure() -> Self {
        Self::start_with(Posture::Secure)
    }

    fn start_with(posture: Posture) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // A free port can be taken by another process (a `mesh` child picking
        // its own) before the agent binds it: draw again, a few times.
        let mut attempts = 0;
        let agent = loop {
            attempts += 1;
            let port = free_port();
            let mut options = ConsulOptions::new(tool("consul"), posture, dir.path());
            options.api_port = Some(port);
            options.node_name = Some(format!("test-{port}"));
            options.ui = false;
            options.log_level = Some("warn".to_owned());
            match LocalConsul::spawn(options) {
                Ok(agent) => break agent,
                Err(localenv::Error::PortTaken { .. }) if attempts < 3 => continue,
                Err(error) => panic!("cannot start a Consul agent: {error}"),
            }
        };
        let client = AgentClient::for_endpoint(&agent.endpoint());
        let master_token = agent.token_file("master").map(|file| {
            std::fs::read_to_string(file)
                .expect("the master token")
                .trim()
                .to_owned()
        });
        let mut started = Self {
            agent,
            dir,
            master_token,
            client,
        };
        if let Err(error) = started
            .agent
            .wait_ready(&started.client, &Cancel::default())
        {
            panic!(
                "the Consul agent is not ready: {error}\n{}",
                started.agent.log_tail()
            );
        }
        started
    }

    /// `127.0.0.1:<http port>` (the HTTPS port of a secure agent).
    pub fn http_addr(&self) -> String {
        self.agent.address()
    }

    /// The value for `CONSUL_HTTP_ADDR`: `http://127.0.0.1:<port>`, or
    /// `https://…` for a secure agent.
    pub fn url(&self) -> String {
        self.agent.url()
    }

    /// The CA file that signed a secure agent's certificate (`CONSUL_CACERT`).
    pub fn ca_file(&self) -> Option<&Path> {
        self.agent.ca_file()
    }

    /// A secure agent's master token (full rights).
    pub fn master_token(&self) -> Option<&str> {
        self.master_token.as_deref()
    }

    /// A secure agent's token file of `holder`: `master`, `agent`, a service
    /// (`users`…, with the policy the project ships for it) or `mesh-read`.
    pub fn token_file(&self, holder: &str) -> Option<PathBuf> {
        self.agent.token_file(holder)
    }

    /// The folder of the agent's files (certificates, configuration, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.agent.pid()
    }

    /// A client of this agent as the master token (anonymous on a plain
    /// agent); [`AgentClient::with_token`] gives another token.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<String, ureq::Error> {
        self.client.request(method, path, body)
    }

    /// GET `path` (e.g. `/v1/health/service/users`) as text.
    pub fn get_text(&self, path: &str) -> Result<String, ureq::Error> {
        self.request("GET", path, None)
    }

    /// PUT `body` (JSON text, may be empty) to `path` (e.g.
    /// `/v1/agent/service/register`); returns the answer's text. A non-2xx
    /// answer is an error.
    pub fn put_text(&self, path: &str, body: &str) -> Result<String, ureq::Error> {
        self.request("PUT", path, Some(body))
    }

    /// Creates the ACL policy `name` with `rules` (HCL), or replaces the
    /// rules of the policy of that name.
    pub fn create_policy(&self, name: &str, rules: &str) {
        let existing = self.get_json("/v1/acl/policies");
        let id = existing
            .as_array()
            .into_iter()
            .flatten()
            .find(|policy| policy["Name"] == name)
            .and_then(|policy| policy["ID"].as_str().map(str::to_owned));
        let path = id.map_or_else(
            || "/v1/acl/policy".to_owned(),
            |id| format!("/v1/acl/policy/{id}"),
        );
        let body = serde_json::json!({"Name": name, "Rules": rules}).to_string();
        self.put_text(&path, &body)
            .unwrap_or_else(|error| panic!("writing the ACL policy {name}: {error}"));
    }

    /// Creates a token carrying `policies`.
    pub fn create_token(&self, description: &str, policies: &[&str]) -> AclToken {
        let policies: Vec<_> = policies
            .iter()
            .map(|name| serde_json::json!({"Name": name}))
            .collect();
        let body =
            serde_json::json!({"Description": description, "Policies": policies}).to_string();
        let text = self
            .put_text("/v1/acl/token", &body)
            .unwrap_or_else(|error| panic!("creating the ACL token {description}: {error}"));
        let token: serde_json::Value = serde_json::from_str(&text).expect("token JSON");
        AclToken {
            accessor: token["AccessorID"].as_str().expect("AccessorID").to_owned(),
            secret: token["SecretID"].as_str().expect("SecretID").to_owned(),
        }
    }

    /// Deletes a token: its SecretID stops working at once.
    pub fn delete_token(&self, token: &AclToken) {
        self.request("DELETE", &format!("/v1/acl/token/{}", token.accessor), None)
            .unwrap_or_else(|error| panic!("deleting an ACL token: {error}"));
    }

    /// GET `path` as JSON; panics if the agent does not answer.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let text = self
            .get_text(path)
            .unwrap_or_else(|error| panic!("GET {path} from Consul: {error}"));
        serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("GET {path}: not JSON ({error}): {text}"))
    }

    /// The IDs of `service`'s instances whose every check passes, sorted.
    pub fn passing_ids(&self, service: &str) -> Vec<String> {
        let entries = self.get_json(&format!("/v1/health/service/{service}?passing"));
        let mut ids: Vec<String> = entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|entry| entry["Service"]["ID"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The IDs of every registered instance of `service`, whatever its health.
    pub fn registered_ids(&self, service: &str) -> Vec<String> {
        let entries = self.get_json(&format!("/v1/catalog/service/{service}"));
        let mut ids: Vec<String> = entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|entry| entry["ServiceID"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Waits until exactly `count` instances of `service` pass; returns their IDs.
    pub fn wait_passing(&self, service: &str, count: usize, timeout: Duration) -> Vec<String> {
        wait_until(
            &format!("{count} passing instance(s) of {service} in Consul"),
            timeout,
            || {
                let ids = self.passing_ids(service);
                (ids.len() == count).then_some(ids)
            },
        )
    }

    /// SIGKILLs the agent (its in-memory state is lost, as on a real restart).
    pub fn kill(&mut self) {
        self.agent
            .kill()
            .unwrap_or_else(|error| panic!("cannot kill the Consul agent: {error}"));
    }

    /// Starts the agent again on the same ports, with empty state (a secure
    /// agent gets the same policies and tokens again).
    pub fn restart(&mut self) {
        if let Err(error) = self.agent.restart(&self.client, &Cancel::default()) {
            panic!(
                "the restarted Consul agent is not ready: {error}\n{}",
                self.agent.log_tail()
            );
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.agent.log_path()).unwrap_or_default()
    }
}
