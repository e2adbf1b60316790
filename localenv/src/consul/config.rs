//! The one configuration of a local Consul agent, for both postures: every
//! port on loopback (the API's given or free, the rest free), and in the
//! secure posture ACLs on with `default_policy = "deny"`, the API on HTTPS
//! only, the certificate from `consul tls`. `mesh up`, `mesh env`, the test
//! harness and the scripts all run an agent from this file.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::{ports, Error};

/// The agent's loopback ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The HTTP API (HTTPS in the secure posture).
    pub api: u16,
    /// DNS.
    pub dns: u16,
    /// gRPC (xDS; unused by the mesh, moved off its default).
    pub grpc: u16,
    /// Serf LAN gossip.
    pub serf_lan: u16,
    /// Serf WAN gossip.
    pub serf_wan: u16,
    /// Server RPC.
    pub server: u16,
}

impl Ports {
    /// The API on `api` (else a free port), the others on free ports (free
    /// for TCP and UDP: DNS and Serf use both).
    pub fn choose(api: Option<u16>) -> Result<Self, Error> {
        let free = ports::free_ports(if api.is_some() { 5 } else { 6 }, true)?;
        let mut free = free.into_iter();
        let mut next = || free.next().ok_or(Error::NoFreePorts { count: 6 });
        let api = match api {
            Some(port) => {
                ports::reserve(port);
                port
            }
            None => next()?,
        };
        Ok(Self {
            api,
            dns: next()?,
            grpc: next()?,
            serf_lan: next()?,
            serf_wan: next()?,
            server: next()?,
        })
    }
}

/// What the secure posture adds: ACLs and TLS.
#[derive(Debug, Clone)]
pub struct Security {
    /// The management token (Consul 1.8's `acl.tokens.master`).
    pub master_token: String,
    /// The agent's own token (created with the `mesh-agent` policy by the
    /// ACL bootstrap).
    pub agent_token: String,
    /// The CA that signed the agent's certificate.
    pub ca_file: PathBuf,
    /// The agent's certificate (`consul tls cert create -server`).
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
}

/// The agent's configuration file's content.
pub fn agent_config(ports: &Ports, node_name: Option<&str>, security: Option<&Security>) -> Value {
    let mut config = json!({
        "bind_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
        "ports": {
            "dns": ports.dns,
            "grpc": ports.grpc,
            "serf_lan": ports.serf_lan,
            "serf_wan": ports.serf_wan,
            "server": ports.server,
        },
    });
    if let Some(node_name) = node_name {
        config["node_name"] = json!(node_name);
    }
    match security {
        None => config["ports"]["http"] = json!(ports.api),
        Some(security) => {
            // HTTPS only: no plain HTTP port at all.
            config["ports"]["http"] = json!(-1);
            config["ports"]["https"] = json!(ports.api);
            config["acl"] = json!({
                "enabled": true,
                "default_policy": "deny",
                // While the leader is unreachable, keep using cached decisions.
                "down_policy": "extend-cache",
                "tokens": {"master": security.master_token, "agent": security.agent_token},
            });
            config["ca_file"] = json!(security.ca_file);
            config["cert_file"] = json!(security.cert_file);
            config["key_file"] = json!(security.key_file);
            // Clients prove who they are with ACL tokens, not certificates.
            config["verify_incoming"] = json!(false);
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Ports {
        Ports {
            api: 8501,
            dns: 1,
            grpc: 2,
            serf_lan: 3,
            serf_wan: 4,
            server: 5,
        }
    }

    #[test]
    fn the_plain_agent_serves_http_on_its_api_port_without_acls() {
        let config = agent_config(&ports(), Some("n1"), None);
        assert_eq!(config["ports"]["http"], 8501);
        assert!(config["ports"]["https"].is_null());
        assert!(config["acl"].is_null());
        assert_eq!(config["node_name"], "n1");
        assert_eq!(config["client_addr"], "127.0.0.1");
    }

    #[test]
    fn the_secure_agent_is_https_only_and_default_deny() {
        let security = Security {
            master_token: "m".into(),
            agent_token: "a".into(),
            ca_file: "/tls/ca.pem".into(),
            cert_file: "/tls/cert.pem".into(),
            key_file: "/tls/key.pem".into(),
        };
        let config = agent_config(&ports(), None, Some(&security));
        assert_eq!(config["ports"]["http"], -1);
        assert_eq!(config["ports"]["https"], 8501);
        assert_eq!(config["acl"]["default_policy"], "deny");
        assert_eq!(config["acl"]["down_policy"], "extend-cache");
        assert_eq!(config["acl"]["tokens"]["agent"], "a");
        assert_eq!(config["ca_file"], "/tls/ca.pem");
    }

    #[test]
    fn chosen_ports_are_distinct_and_keep_a_given_api_port() {
        let given = ports::free_port().unwrap();
        let chosen = Ports::choose(Some(given)).unwrap();
        assert_eq!(chosen.api, given);
        let all = [
            chosen.api,
            chosen.dns,
            chosen.grpc,
            chosen.serf_lan,
            chosen.serf_wan,
            chosen.server,
        ];
        let unique: std::collections::HashSet<u16> = all.into_iter().collect();
        assert_eq!(unique.len(), 6);
    }
}
