//! The few Consul HTTP endpoints the CLI reads and writes, through the
//! discovery crate's one client (HTTP or HTTPS, the token from a value or a
//! file, never printed, a deadline on every call).

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use discovery::{ConsulConfig, ConsulError, ConsulHttp};
use http::Method;
use serde::de::DeserializeOwned;

use super::model::HealthEntry;

/// Longest whole request (connect included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a Consul call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Nothing answered (refused, timed out, connection broken).
    #[error("Consul at {address} is unreachable: {reason}")]
    Unreachable {
        /// `host:port`.
        address: String,
        /// What happened.
        reason: String,
    },
    /// Consul answered with an error, refused the token, or HTTPS failed:
    /// the message says what to fix.
    #[error("Consul at {address}: {error}")]
    Consul {
        /// `host:port`.
        address: String,
        /// What Consul or the TLS handshake said (in the message, not as a
        /// `source()`: printed once). Boxed: it is large, and results carry it.
        error: Box<ConsulError>,
    },
}

/// The HTTP API of one Consul agent.
#[derive(Clone, Debug)]
pub(crate) struct ConsulApi {
    http: ConsulHttp,
    config: ConsulConfig,
}

impl ConsulApi {
    /// The agent `config` names.
    pub(crate) fn new(config: &ConsulConfig) -> Self {
        Self {
            http: ConsulHttp::new(config),
            config: config.clone(),
        }
    }

    /// The configuration (address, TLS, token source) of this agent.
    pub(crate) fn config(&self) -> &ConsulConfig {
        &self.config
    }

    /// `host:port` of the agent.
    pub(crate) fn address(&self) -> &str {
        self.config.address()
    }

    /// The port of the agent's HTTP(S) API.
    pub(crate) fn port(&self) -> u16 {
        self.address()
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(8500)
    }

    /// Whether the agent's address is on this machine's loopback, where
    /// `mesh up` may start an agent of its own.
    pub(crate) fn is_loopback(&self) -> bool {
        let address = self.address();
        let host = address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// GET `path` and decode the JSON answer.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.send(Method::GET, path, Bytes::new())
            .await?
            .json(path)
            .map_err(|error| self.consul(error))
    }

    /// PUT `body` (JSON) to `path` and decode the JSON answer.
    pub(crate) async fn put_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        self.send(Method::PUT, path, Bytes::from(body.to_string()))
            .await?
            .json(path)
            .map_err(|error| self.consul(error))
    }

    /// The raft leader's address; empty while there is none.
    pub(crate) async fn leader(&self) -> Result<String, ApiError> {
        self.get_json("/v1/status/leader").await
    }

    /// Every registered service name (`consul` included), sorted.
    pub(crate) async fn service_names(&self) -> Result<Vec<String>, ApiError> {
        let services: std::collections::BTreeMap<String, serde_json::Value> =
            self.get_json("/v1/catalog/services").await?;
        Ok(services.into_keys().collect())
    }

    /// `/v1/health/service/<service>`: every instance with its checks, or
    /// (`passing_only`) only those whose every check passes.
    pub(crate) async fn health(
        &self,
        service: &str,
        passing_only: bool,
    ) -> Result<Vec<HealthEntry>, ApiError> {
        let filter = if passing_only { "?passing" } else { "" };
        self.get_json(&format!("/v1/health/service/{service}{filter}"))
            .await
    }

    /// The IDs of the services registered with this agent (`/v1/agent/services`).
    pub(crate) async fn agent_service_ids(&self) -> Result<Vec<String>, ApiError> {
        let services: std::collections::BTreeMap<String, serde_json::Value> =
            self.get_json("/v1/agent/services").await?;
        Ok(services.into_keys().collect())
    }

    /// DELETE `path`.
    pub(crate) async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.send(Method::DELETE, path, Bytes::new())
            .await
            .map(drop)
    }

    /// Registers a service with this agent (`/v1/agent/service/register`,
    /// `registration` as Consul's JSON).
    pub(crate) async fn register(&self, registration: &serde_json::Value) -> Result<(), ApiError> {
        self.send(
            Method::PUT,
            "/v1/agent/service/register",
            Bytes::from(registration.to_string()),
        )
        .await
        .map(drop)
    }

    /// Removes the service `id` from this agent.
    pub(crate) async fn deregister(&self, id: &str) -> Result<(), ApiError> {
        self.send(
            Method::PUT,
            &format!("/v1/agent/service/deregister/{id}"),
            Bytes::new(),
        )
        .await
        .map(drop)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<discovery::Answer, ApiError> {
        let route = path.split('?').next().unwrap_or(path);
        self.http
            .send(method.clone(), route, path, body, REQUEST_TIMEOUT)
            .await
            .and_then(|answer| answer.success(&method, route))
            .map_err(|error| match error {
                ConsulError::Transport { message, .. } => ApiError::Unreachable {
                    address: self.address().to_owned(),
                    reason: message,
                },
                ConsulError::Timeout { timeout, .. } => ApiError::Unreachable {
                    address: self.address().to_owned(),
                    reason: format!("no answer within {timeout:?}"),
                },
                other => self.consul(other),
            })
    }

    fn consul(&self, error: ConsulError) -> ApiError {
        ApiError::Consul {
            address: self.address().to_owned(),
            error: Box::new(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(address: &str) -> ConsulApi {
        ConsulApi::new(&ConsulConfig::new(address, None).unwrap())
    }

    #[test]
    fn normalises_the_address_and_knows_loopback() {
        let api18500 = api("http://127.0.0.1:18500/");
        assert_eq!(api18500.address(), "127.0.0.1:18500");
        assert_eq!(api18500.port(), 18500);
        assert!(api18500.is_loopback());
        assert!(api("localhost").is_loopback());
        assert!(api("[::1]:8500").is_loopback());
        assert!(!api("consul.internal:8500").is_loopback());
        assert!(!api("10.0.0.7:8500").is_loopback());
        assert!(api("https://127.0.0.1:8501").config().is_https());
    }
}
