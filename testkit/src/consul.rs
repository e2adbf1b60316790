//! A real Consul dev agent on free loopback ports: plain (ACLs off, HTTP) or
//! secure (ACLs on with `default_policy = "deny"`, the HTTP API on HTTPS only,
//! certificates from `consul tls ca create` / `consul tls cert create`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use crate::{paths::tool, ports::free_port, process::ChildGuard, wait::wait_until};

/// A `consul agent -dev` on its own free ports. Dropping it kills and reaps it.
#[derive(Debug)]
pub struct ConsulAgent {
    child: Option<ChildGuard>,
    ports: Ports,
    dir: tempfile::TempDir,
    starts: u32,
    secure: Option<Secure>,
    http: ureq::Agent,
}

/// What a secure agent was started with.
#[derive(Debug, Clone)]
struct Secure {
    ca_file: PathBuf,
    config_file: PathBuf,
    master_token: String,
}

/// A token created with [`ConsulAgent::create_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclToken {
    /// The public AccessorID (to delete it).
    pub accessor: String,
    /// The SecretID: what goes into `X-Consul-Token` and token files.
    pub secret: String,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    http: u16,
    dns: u16,
    grpc: u16,
    serf_lan: u16,
    serf_wan: u16,
    server: u16,
}

impl ConsulAgent {
    /// Starts an agent (ACLs off, plain HTTP) and waits until it has elected
    /// itself leader.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts an agent as production runs Consul — ACLs on with
    /// `default_policy = "deny"`, HTTPS only (no HTTP port), a certificate
    /// from `consul tls cert create -server` signed by a CA from `consul tls
    /// ca create` — and waits for its leader. The harness's own calls
    /// ([`ConsulAgent::get_json`]…) use the master token.
    pub fn start_secure() -> Self {
        Self::start_with(true)
    }

    fn start_with(secure: bool) -> Self {
        let ports = Ports {
            http: free_port(),
            dns: free_port(),
            grpc: free_port(),
            serf_lan: free_port(),
            serf_wan: free_port(),
            server: free_port(),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let secure = secure.then(|| Secure::prepare(dir.path(), ports));
        let http = http_agent(secure.as_ref().map(|secure| secure.ca_file.as_path()));
        let mut agent = Self {
            child: None,
            ports,
            dir,
            starts: 0,
            secure,
            http,
        };
        agent.launch();
        agent
    }

    fn launch(&mut self) {
        self.starts += 1;
        let ports = self.ports;
        let mut command = Command::new(tool("consul"));
        command.args([
            "agent",
            "-dev",
            "-client",
            "127.0.0.1",
            "-bind",
            "127.0.0.1",
            "-log-level",
            "warn",
        ]);
        command.args(["-node", &format!("test-{}", ports.http)]);
        match &self.secure {
            // Its ports are in the configuration file (HTTP off, HTTPS on).
            Some(secure) => {
                command.arg("-config-file").arg(&secure.config_file);
            }
            None => {
                for (flag, port) in [
                    ("-http-port", ports.http),
                    ("-dns-port", ports.dns),
                    ("-grpc-port", ports.grpc),
                    ("-serf-lan-port", ports.serf_lan),
                    ("-serf-wan-port", ports.serf_wan),
                    ("-server-port", ports.server),
                ] {
                    command.args([flag, &port.to_string()]);
                }
            }
        }
        let log = self.dir.path().join(format!("consul-{}.log", self.starts));
        self.child = Some(ChildGuard::spawn("consul", command, &log));
        wait_until(
            "the Consul agent to elect a leader",
            Duration::from_secs(30),
            || {
                let leader = self.get_text("/v1/status/leader").ok()?;
                (leader.trim().len() > 2).then_some(())
            },
        );
    }

    /// `127.0.0.1:<http port>` (the HTTPS port of a secure agent).
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.http)
    }

    /// The value for `CONSUL_HTTP_ADDR`: `http://127.0.0.1:<port>`, or
    /// `https://…` for a secure agent.
    pub fn url(&self) -> String {
        let scheme = if self.secure.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.http_addr())
    }

    /// The CA file that signed a secure agent's certificate (`CONSUL_CACERT`).
    pub fn ca_file(&self) -> Option<&Path> {
        self.secure.as_ref().map(|secure| secure.ca_file.as_path())
    }

    /// A secure agent's master token (full rights).
    pub fn master_token(&self) -> Option<&str> {
        self.secure
            .as_ref()
            .map(|secure| secure.master_token.as_str())
    }

    /// The folder of the agent's files (certificates, configuration, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<String, ureq::Error> {
        let url = format!("{}{path}", self.url());
        let token = self.master_token().unwrap_or_default();
        let mut answer = match method {
            "GET" => self.http.get(&url).header("X-Consul-Token", token).call()?,
            "DELETE" => self
                .http
                .delete(&url)
                .header("X-Consul-Token", token)
                .call()?,
            _ => self
                .http
                .put(&url)
                .header("X-Consul-Token", token)
                .send(body.unwrap_or_default())?,
        };
        answer.body_mut().read_to_string()
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

    /// Creates (or replaces) the ACL policy `name` with `rules` (HCL).
    pub fn create_policy(&self, name: &str, rules: &str) {
        let body = serde_json::json!({"Name": name, "Rules": rules}).to_string();
        self.put_text("/v1/acl/policy", &body)
            .unwrap_or_else(|error| panic!("creating the ACL policy {name}: {error}"));
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
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts the agent again on the same ports, with empty state.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        self.child.as_ref().map(ChildGuard::log).unwrap_or_default()
    }
}

impl Secure {
    /// Certificates from Consul's own `consul tls` commands and an agent
    /// configuration with ACLs default-deny and HTTPS only, in `dir`.
    fn prepare(dir: &Path, ports: Ports) -> Self {
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        for args in [
            &["tls", "ca", "create"][..],
            &["tls", "cert", "create", "-server", "-dc", "dc1"][..],
        ] {
            let output = Command::new(tool("consul"))
                .args(args)
                .current_dir(&tls)
                .output()
                .expect("run consul tls");
            assert!(
                output.status.success(),
                "consul {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // Consul tokens are UUIDs.
        let master_token = uuid::Uuid::new_v4().to_string();
        let config = serde_json::json!({
            "acl": {
                "enabled": true,
                "default_policy": "deny",
                "tokens": {"master": master_token, "agent": master_token},
            },
            "ports": {
                "http": -1,
                "https": ports.http,
                "dns": ports.dns,
                "grpc": ports.grpc,
                "serf_lan": ports.serf_lan,
                "serf_wan": ports.serf_wan,
                "server": ports.server,
            },
            "ca_file": tls.join("consul-agent-ca.pem"),
            "cert_file": tls.join("dc1-server-consul-0.pem"),
            "key_file": tls.join("dc1-server-consul-0-key.pem"),
            "verify_incoming": false,
        });
        let config_file = dir.join("secure.json");
        std::fs::write(&config_file, config.to_string()).expect("write the agent config");
        Self {
            ca_file: tls.join("consul-agent-ca.pem"),
            config_file,
            master_token,
        }
    }
}

/// The harness's HTTP client: 5 s per call, trusting `ca_file` when given.
fn http_agent(ca_file: Option<&Path>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5)));
    if let Some(ca_file) = ca_file {
        let pem = std::fs::read(ca_file).expect("read the CA file");
        let certificate = ureq::tls::Certificate::from_pem(&pem)
            .expect("a PEM certificate")
            .to_owned();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![certificate])))
                .build(),
        );
    }
    config.build().new_agent()
}
