//! A blocking HTTP(S) client of one Consul agent with one token (ureq, 10 s
//! per call): what the harness's own calls use, and the `localenv` engine's
//! calls when the harness starts an agent.

use std::{path::Path, sync::Arc, time::Duration};

use localenv::{consul::Endpoint, CallError, ConsulCalls};
use serde_json::Value;

/// Calls to one agent as one token.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: ureq::Agent,
    url: String,
    token: String,
}

impl AgentClient {
    /// `url` (`http://…` or `https://…`), trusting `ca_file` when given,
    /// sending `token` (none: anonymous).
    pub fn new(url: &str, ca_file: Option<&Path>, token: Option<&str>) -> Self {
        let mut config =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10)));
        if let Some(ca_file) = ca_file {
            let pem = std::fs::read(ca_file)
                .unwrap_or_else(|error| panic!("read the CA {}: {error}", ca_file.display()));
            let certificate = ureq::tls::Certificate::from_pem(&pem)
                .expect("a PEM certificate")
                .to_owned();
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![certificate])))
                    .build(),
            );
        }
        Self {
            http: config.build().new_agent(),
            url: url.trim_end_matches('/').to_owned(),
            token: token.unwrap_or_default().to_owned(),
        }
    }

    /// The engine's endpoint of an agent: its URL, CA and management token.
    pub fn for_endpoint(endpoint: &Endpoint) -> Self {
        let token = endpoint.token_file.as_ref().map(|file| {
            std::fs::read_to_string(file)
                .unwrap_or_else(|error| panic!("read {}: {error}", file.display()))
                .trim()
                .to_owned()
        });
        Self::new(&endpoint.url, endpoint.ca_file.as_deref(), token.as_deref())
    }

    /// The same agent as another token.
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            token: token.unwrap_or_default().to_owned(),
            ..self.clone()
        }
    }

    /// `method path` with `body` (`GET`, `PUT`, `POST`, `DELETE`); the
    /// answer's text. A non-2xx answer is an error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<String, ureq::Error> {
        self.call(method, path, body, true)
            .and_then(|mut answer| answer.body_mut().read_to_string())
    }

    /// `method path` with `body`: the answer's HTTP status, whatever it is.
    pub fn status(&self, method: &str, path: &str, body: Option<&str>) -> Result<u16, ureq::Error> {
        self.call(method, path, body, false)
            .map(|answer| answer.status().as_u16())
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        status_as_error: bool,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("X-Consul-Token", &self.token)
            .body(body.unwrap_or_default().to_owned())?;
        let request = self
            .http
            .configure_request(request)
            .http_status_as_error(status_as_error)
            .build();
        self.http.run(request)
    }

    fn json(&self, method: &str, path: &str, body: Option<&str>) -> Result<Value, CallError> {
        let text = self.request(method, path, body).map_err(CallError::new)?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|error| CallError::new(format!("not JSON ({error}): {text}")))
    }
}

impl ConsulCalls for AgentClient {
    fn get(&self, path: &str) -> Result<Value, CallError> {
        self.json("GET", path, None)
    }

    fn put(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        self.json("PUT", path, Some(&body.to_string()))
    }

    fn delete(&self, path: &str) -> Result<(), CallError> {
        self.request("DELETE", path, None)
            .map(drop)
            .map_err(CallError::new)
    }
}
