//! A small HTTP/1.1 client for the Consul endpoints called directly
//! (hyper 1 + hyper-util's pooled client): every request carries the token,
//! has a deadline and a bounded body.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use crate::{
    config::ConsulConfig,
    error::{chain, ConsulError},
};

/// Larger answers are refused: a health list of thousands of instances is a few MiB.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// How long a TCP connect to the agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A Consul answer: status, headers, whole body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Pooled keep-alive connections to one Consul agent.
#[derive(Clone, Debug)]
pub(crate) struct ConsulHttp {
    client: Client<HttpConnector, Full<Bytes>>,
    base_url: String,
    token: Option<HeaderValue>,
}

impl ConsulHttp {
    pub(crate) fn new(config: &ConsulConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let token = config.token().and_then(|token| {
            // ConsulConfig only admits visible ASCII, so this cannot fail.
            let mut value = HeaderValue::from_str(token).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        Self {
            client,
            base_url: config.base_url().to_owned(),
            token,
        }
    }

    /// GET `path_and_query` (starting with `/v1/`); `path` names it in errors.
    pub(crate) async fn get(
        &self,
        path: &str,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        self.send(Method::GET, path, path_and_query, Bytes::new(), timeout)
            .await
    }

    /// `method` (PUT, POST, DELETE…) `path_and_query` with a JSON `body` (may be empty).
    pub(crate) async fn send_json(
        &self,
        method: Method,
        path: &str,
        path_and_query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        self.send(method, path, path_and_query, body, timeout).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        path_and_query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        let transport = |message: String| ConsulError::Transport {
            method: method.to_string(),
            path: path.to_owned(),
            message,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{}", self.base_url, path_and_query))
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|error| transport(format!("cannot build the request: {error}")))?;
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
                .map_err(|error| transport(chain(&error)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|error| {
                    transport(format!(
                        "reading the body: {}",
                        crate::error::chain(&*error)
                    ))
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ConsulError::Timeout {
                method: method.to_string(),
                path: path.to_owned(),
                timeout,
            })?
    }
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved characters pass).
pub(crate) fn encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("users-1"), "users-1");
        assert_eq!(encode("mesh.users.v1"), "mesh.users.v1");
        assert_eq!(encode("a b/c?d&e=f"), "a%20b%2Fc%3Fd%26e%3Df");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
