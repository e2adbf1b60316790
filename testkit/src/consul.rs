//! A real Consul dev agent on free loopback ports.

use std::{process::Command, time::Duration};

use crate::{paths::tool, ports::free_port, process::ChildGuard, wait::wait_until};

/// A `consul agent -dev` on its own free ports. Dropping it kills and reaps it.
#[derive(Debug)]
pub struct ConsulAgent {
    child: Option<ChildGuard>,
    ports: Ports,
    dir: tempfile::TempDir,
    starts: u32,
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
    /// Starts an agent and waits until it has elected itself leader.
    pub fn start() -> Self {
        let ports = Ports {
            http: free_port(),
            dns: free_port(),
            grpc: free_port(),
            serf_lan: free_port(),
            serf_wan: free_port(),
            server: free_port(),
        };
        let mut agent = Self {
            child: None,
            ports,
            dir: tempfile::tempdir().expect("temp dir"),
            starts: 0,
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

    /// `127.0.0.1:<http port>`, the value for `CONSUL_HTTP_ADDR`.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.http)
    }

    /// GET `path` (e.g. `/v1/health/service/users`) as text.
    pub fn get_text(&self, path: &str) -> Result<String, ureq::Error> {
        ureq::get(&format!("http://{}{path}", self.http_addr()))
            .config()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .call()?
            .body_mut()
            .read_to_string()
    }

    /// PUT `body` (JSON text, may be empty) to `path` (e.g.
    /// `/v1/agent/service/register`); returns the answer's text. A non-2xx
    /// answer is an error.
    pub fn put_text(&self, path: &str, body: &str) -> Result<String, ureq::Error> {
        ureq::put(&format!("http://{}{path}", self.http_addr()))
            .config()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .send(body)?
            .body_mut()
            .read_to_string()
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
