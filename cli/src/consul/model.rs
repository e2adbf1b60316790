//! The parts of Consul's `/v1/health/service/<name>` answer the CLI reads.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One instance with its node and checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthEntry {
    /// The node the instance is registered on.
    pub(crate) node: Node,
    /// The instance.
    pub(crate) service: ServiceInstance,
    /// Node checks (serfHealth) and the instance's own checks.
    #[serde(default)]
    pub(crate) checks: Vec<Check>,
}

/// A Consul node.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Node {
    /// The node's address (used when the instance registered none).
    #[serde(default)]
    pub(crate) address: String,
}

/// A registered service instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceInstance {
    /// Service ID, e.g. `users-1`.
    #[serde(rename = "ID")]
    pub(crate) id: String,
    /// Service name, e.g. `users`.
    pub(crate) service: String,
    /// Registered address; empty means the node's.
    #[serde(default)]
    pub(crate) address: String,
    /// Registered port.
    #[serde(default)]
    pub(crate) port: u16,
    /// Meta (`version`, `instance`…); Consul sends `null` for none.
    #[serde(default)]
    pub(crate) meta: Option<BTreeMap<String, String>>,
}

/// One health check.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Check {
    /// `passing`, `warning` or `critical`.
    pub(crate) status: String,
    /// The last run's output.
    #[serde(default)]
    pub(crate) output: String,
    /// The instance the check belongs to; empty for node checks.
    #[serde(rename = "ServiceID", default)]
    pub(crate) service_id: String,
    /// `grpc`, `http`, `ttl`…; empty for node checks.
    #[serde(rename = "Type", default)]
    pub(crate) kind: String,
}

impl HealthEntry {
    /// `address:port` where the instance serves (its own address, else the node's).
    pub(crate) fn socket_address(&self) -> String {
        let host = if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.service.port)
        } else {
            format!("{host}:{}", self.service.port)
        }
    }

    /// A Meta value, if set.
    pub(crate) fn meta(&self, key: &str) -> Option<&str> {
        self.service.meta.as_ref()?.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real Consul 1.8 answer.
    const SAMPLE: &str = r#"[
      {"Node": {"Node": "n1", "Address": "127.0.0.1"},
       "Service": {"ID": "users-1", "Service": "users", "Address": "127.0.0.1", "Port": 50051,
                   "Meta": {"version": "0.1.0", "instance": "1"}},
       "Checks": [
         {"CheckID": "serfHealth", "Status": "passing", "Output": "Agent alive and reachable", "ServiceID": "", "Type": ""},
         {"CheckID": "service:users-1", "Status": "passing", "Output": "gRPC check 127.0.0.1:50051/mesh.users.v1.Users: success", "ServiceID": "users-1", "Type": "grpc"}
       ]},
      {"Node": {"Node": "n1", "Address": "10.0.0.1"},
       "Service": {"ID": "users-2", "Service": "users", "Address": "", "Port": 40000, "Meta": null},
       "Checks": []}
    ]"#;

    #[test]
    fn reads_real_answers_including_null_meta() {
        let entries: Vec<HealthEntry> = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(entries[0].service.id, "users-1");
        assert_eq!(entries[0].socket_address(), "127.0.0.1:50051");
        assert_eq!(entries[0].meta("version"), Some("0.1.0"));
        assert_eq!(entries[0].checks[1].kind, "grpc");
        assert_eq!(entries[1].socket_address(), "10.0.0.1:40000");
        assert_eq!(entries[1].meta("version"), None);
    }
}
