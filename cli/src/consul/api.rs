//! A small client for the few Consul HTTP endpoints the CLI reads: every
//! request carries the token (never printed) and has a deadline.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde::de::DeserializeOwned;

use super::model::HealthEntry;

/// Longest whole request (connect included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read.
const MAX_BODY: usize = 16 * 1024 * 1024;

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
    /// Consul answered with an error status.
    #[error("Consul at {address} answered {status} to {method} {path}: {body}")]
    Status {
        /// `host:port`.
        address: String,
        /// The request method.
        method: Method,
        /// The path asked for.
        path: String,
        /// The HTTP status.
        status: StatusCode,
        /// The start of the answer.
        body: String,
    },
    /// The answer was not what Consul sends (something else listens there?).
    #[error("unexpected answer from {address} to GET {path} (is that a Consul agent?): {reason}")]
    Decode {
        /// `host:port`.
        address: String,
        /// The path asked for.
        path: String,
        /// The parse error.
        reason: String,
    },
}

/// The HTTP API of one Consul agent.
#[derive(Clone, Debug)]
pub(crate) struct ConsulApi {
    client: Client<HttpConnector, Full<Bytes>>,
    address: String,
    token: Option<HeaderValue>,
}

impl ConsulApi {
    /// `address` in any `CONSUL_HTTP_ADDR` form (`127.0.0.1:8500`, `http://…`);
    /// `token` is sent as `X-Consul-Token`.
    pub(crate) fn new(address: &str, token: Option<&str>) -> anyhow::Result<Self> {
        // The discovery crate owns the rules for CONSUL_HTTP_ADDR and tokens.
        let config = discovery::ConsulConfig::new(address, token.map(str::to_owned))?;
        let token = match token.filter(|token| !token.is_empty()) {
            Some(token) => {
                let mut value = HeaderValue::from_str(token)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            address: config.address().to_owned(),
            token,
        })
    }

    /// `host:port` of the agent.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The port of the agent's HTTP API.
    pub(crate) fn port(&self) -> u16 {
        self.address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(8500)
    }

    /// Whether the agent's address is on this machine's loopback, where
    /// `mesh up` may start an agent of its own.
    pub(crate) fn is_loopback(&self) -> bool {
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// GET `path` and decode the JSON answer.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let body = self.get(path).await?;
        serde_json::from_slice(&body).map_err(|error| ApiError::Decode {
            address: self.address.clone(),
            path: path.to_owned(),
            reason: error.to_string(),
        })
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

    /// PUT `body` as JSON to `path` (e.g. `/v1/catalog/register`).
    pub(crate) async fn put_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(), ApiError> {
        let body = serde_json::to_vec(body).map_err(|error| ApiError::Unreachable {
            address: self.address.clone(),
            reason: format!("cannot encode the request: {error}"),
        })?;
        self.send(Method::PUT, path, body.into()).await.map(drop)
    }

    async fn get(&self, path: &str) -> Result<Bytes, ApiError> {
        self.send(Method::GET, path, Bytes::new()).await
    }

    async fn send(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, ApiError> {
        let unreachable = |reason: String| ApiError::Unreachable {
            address: self.address.clone(),
            reason,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{path}", self.address))
            .header(header::ACCEPT, "application/json")
            .body(Full::new(body))
            .map_err(|error| unreachable(format!("cannot build the request: {error}")))?;
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert("x-consul-token", token.clone());
        }
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| unreachable(discovery::error_chain(&error)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|error| unreachable(format!("reading the answer: {error}")))?
                .to_bytes();
            Ok((parts.status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(ApiError::Status {
                address: self.address.clone(),
                method,
                path: path.to_owned(),
                status,
                body: text.chars().take(200).collect::<String>().trim().to_owned(),
            });
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_the_address_and_knows_loopback() {
        let api = ConsulApi::new("http://127.0.0.1:18500/", None).unwrap();
        assert_eq!(api.address(), "127.0.0.1:18500");
        assert_eq!(api.port(), 18500);
        assert!(api.is_loopback());
        assert!(ConsulApi::new("localhost", None).unwrap().is_loopback());
        assert!(ConsulApi::new("[::1]:8500", None).unwrap().is_loopback());
        assert!(!ConsulApi::new("consul.internal:8500", None)
            .unwrap()
            .is_loopback());
        assert!(!ConsulApi::new("10.0.0.7:8500", None).unwrap().is_loopback());
        assert!(ConsulApi::new("https://127.0.0.1:8501", None).is_err());
    }
}
