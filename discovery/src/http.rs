//! The one HTTP client for every call to the Consul agent (hyper 1 +
//! hyper-util's pooled client, rustls for HTTPS): every request carries the
//! current token, has a deadline and a bounded body, and failures that a
//! person must fix (a refused token, an untrusted certificate, HTTP against
//! HTTPS) come back as one readable line.

use std::{error::Error as StdError, time::Duration};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use rustls::CertificateError;

use crate::{
    config::ConsulConfig,
    error::{chain, excerpt, ConsulError},
    tls::AgentTls,
    token::TokenSource,
};

/// Larger answers are refused: a health list of thousands of instances is a few MiB.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// How long a TCP connect to the agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What Go's TLS server answers to a plain-HTTP request.
const HTTP_TO_HTTPS: &str = "HTTP request to an HTTPS server";

/// A Consul answer: status, headers, whole body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status (a 403 never gets here: it is [`ConsulError::Denied`]).
    pub status: StatusCode,
    /// The headers (`X-Consul-Index`…).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// The answer when its status is 2xx, else [`ConsulError::Status`].
    pub fn success(self, method: &Method, path: &str) -> Result<Self, ConsulError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(ConsulError::Status {
                method: method.to_string(),
                path: path.to_owned(),
                status: self.status.as_u16(),
                body: excerpt(&self.body),
            })
        }
    }

    /// The body as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ConsulError> {
        serde_json::from_slice(&self.body).map_err(|error| ConsulError::Decode {
            path: path.to_owned(),
            message: error.to_string(),
        })
    }
}

#[derive(Clone, Debug)]
enum Transport {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

/// Pooled keep-alive connections to one Consul agent, over HTTP or HTTPS as
/// the [`ConsulConfig`] says. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConsulHttp {
    // Shared: clones are cheap and holders (watches, authorizers) stay small.
    inner: std::sync::Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    base_url: String,
    address: String,
    token: TokenSource,
    tls: Option<std::sync::Arc<AgentTls>>,
}

impl ConsulHttp {
    /// A client for the agent `config` names (the TLS material was loaded by
    /// the config, so this cannot fail).
    pub fn new(config: &ConsulConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(30));
        let transport = match config.tls() {
            None => Transport::Plain(builder.build(connector)),
            Some(tls) => {
                connector.enforce_http(false);
                let https = HttpsConnectorBuilder::new()
                    .with_tls_config(tls.client_config().as_ref().clone())
                    .https_only()
                    .with_server_name_resolver(FixedServerNameResolver::new(
                        tls.server_name().clone(),
                    ))
                    .enable_http1()
                    .wrap_connector(connector);
                Transport::Tls(builder.build(https))
            }
        };
        Self {
            inner: std::sync::Arc::new(Inner {
                transport,
                base_url: config.base_url().to_owned(),
                address: config.address().to_owned(),
                token: config.token_source().clone(),
                tls: config.tls().cloned(),
            }),
        }
    }

    /// `host:port` of the agent.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// GET `path_and_query` (starting with `/v1/`); `path` names it in errors.
    pub async fn get(
        &self,
        path: &str,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        self.send(Method::GET, path, path_and_query, Bytes::new(), timeout)
            .await
    }

    /// PUT `body` (JSON, or empty) to `path_and_query`.
    pub async fn put(
        &self,
        path: &str,
        path_and_query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        self.send(Method::PUT, path, path_and_query, body, timeout)
            .await
    }

    /// One call with the current token. A 403 is [`ConsulError::Denied`]; when
    /// the token file now holds another token than the one sent (a rotation
    /// whose old token was already revoked), the call is made once more with
    /// the new token, so rotations cost no failed call.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        path_and_query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        let call = async {
            let sent = self.inner.token.current();
            let mut answer = self
                .exchange(&method, path, path_and_query, &body, sent.as_deref())
                .await?;
            if answer.status == StatusCode::FORBIDDEN {
                self.inner.token.refresh();
                let now = self.inner.token.current();
                if now != sent {
                    tracing::info!(%path, "Consul refused the token and the token file holds a new one: calling again with it");
                    answer = self
                        .exchange(&method, path, path_and_query, &body, now.as_deref())
                        .await?;
                }
            }
            self.classify(&method, path, answer)
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ConsulError::Timeout {
                method: method.to_string(),
                path: path.to_owned(),
                timeout,
            })?
    }

    async fn exchange(
        &self,
        method: &Method,
        path: &str,
        path_and_query: &str,
        body: &Bytes,
        token: Option<&str>,
    ) -> Result<Answer, ConsulError> {
        let transport = |message: String| ConsulError::Transport {
            method: method.to_string(),
            path: path.to_owned(),
            message,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{}", self.inner.base_url, path_and_query))
            .header(header::ACCEPT, "application/json");
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let mut request = request
            .body(Full::new(body.clone()))
            .map_err(|error| transport(format!("cannot build the request: {error}")))?;
        if let Some(token) = token {
            // The token source admits visible ASCII only, so this cannot fail.
            if let Ok(mut value) = HeaderValue::from_str(token) {
                value.set_sensitive(true);
                request.headers_mut().insert("x-consul-token", value);
            }
        }
        let response: Result<Response<Incoming>, _> = match &self.inner.transport {
            Transport::Plain(client) => client.request(request).await,
            Transport::Tls(client) => client.request(request).await,
        };
        let response = response.map_err(|error| match self.tls_problem(&error) {
            Some(message) => ConsulError::Tls {
                method: method.to_string(),
                path: path.to_owned(),
                message,
            },
            None => transport(chain(&error)),
        })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|error| transport(format!("reading the body: {}", chain(&*error))))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// 403 and "HTTP to an HTTPS server" become errors that say what to fix.
    fn classify(&self, method: &Method, path: &str, answer: Answer) -> Result<Answer, ConsulError> {
        if answer.status == StatusCode::FORBIDDEN {
            return Err(ConsulError::Denied {
                method: method.to_string(),
                path: path.to_owned(),
                body: excerpt(&answer.body),
                token_origin: self.inner.token.origin(),
                needs: "the token's policies do not allow this call".to_owned(),
            });
        }
        if answer.status == StatusCode::BAD_REQUEST
            && self.inner.tls.is_none()
            && String::from_utf8_lossy(&answer.body).contains(HTTP_TO_HTTPS)
        {
            return Err(ConsulError::Tls {
                method: method.to_string(),
                path: path.to_owned(),
                message: format!(
                    "the agent at {} speaks HTTPS, not plain HTTP: use https://{} (or \
                     CONSUL_HTTP_SSL=true) and CONSUL_CACERT",
                    self.inner.address, self.inner.address
                ),
            });
        }
        Ok(answer)
    }

    /// A readable line for a failed TLS handshake, naming what to fix.
    fn tls_problem(&self, error: &(dyn StdError + 'static)) -> Option<String> {
        let tls = self.inner.tls.as_ref()?;
        let problem = find_rustls_error(error)?;
        let trust = tls.trust();
        Some(match problem {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "the agent's certificate at {} is not valid for the name {:?} ({problem}): set \
                 CONSUL_TLS_SERVER_NAME to a name it carries (e.g. server.dc1.consul)",
                self.inner.address,
                tls.server_name().to_str()
            ),
            rustls::Error::InvalidCertificate(_) => format!(
                "the agent's certificate at {} is not trusted ({problem}; trusting {trust}): set \
                 CONSUL_CACERT to the CA file that signed it (or CONSUL_CAPATH to a folder \
                 holding it)",
                self.inner.address
            ),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                format!(
                    "the agent at {} does not speak HTTPS ({problem}): use http:// (and unset \
                     CONSUL_HTTP_SSL) if it serves plain HTTP, or check the port",
                    self.inner.address
                )
            }
            rustls::Error::AlertReceived(_) => format!(
                "the agent at {} refused the TLS handshake ({problem}): if it verifies clients, \
                 set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY to a certificate its CA signed",
                self.inner.address
            ),
            other => format!("TLS to the agent at {} failed: {other}", self.inner.address),
        })
    }
}

/// The rustls error somewhere in `error`'s causes. tokio-rustls wraps it in an
/// `io::Error` and hyper-rustls wraps that in another; `io::Error::source()`
/// skips what it wraps, so wrapped errors are opened with `get_ref`.
fn find_rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(found) = find_rustls_error(inner) {
                return Some(found);
            }
        }
        current = error.source();
    }
    None
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

    #[test]
    fn finds_rustls_errors_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert!(matches!(
            find_rustls_error(&io),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ));
        let twice = std::io::Error::other(io);
        assert!(
            find_rustls_error(&twice).is_some(),
            "as hyper-rustls wraps it"
        );
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(find_rustls_error(&plain).is_none());
    }
}
