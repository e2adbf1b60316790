//! `GET /v1/agent/connect/ca/roots`, `GET /v1/agent/connect/ca/leaf/<service>`
//! and `POST /v1/agent/connect/authorize`.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::{
    config::ConsulConfig,
    error::{excerpt, ConsulError},
    health::{parse_index, DEFAULT_WAIT, MAX_WAIT},
    http::{encode, Answer, ConsulHttp},
};

const ROOTS_PATH: &str = "/v1/agent/connect/ca/roots";
const LEAF_PATH: &str = "/v1/agent/connect/ca/leaf";
const AUTHORIZE_PATH: &str = "/v1/agent/connect/authorize";
/// Beyond `wait` (+ Consul's up to `wait/16` jitter) before a blocking request counts as lost.
const HTTP_SLACK: Duration = Duration::from_secs(5);
/// A plain (non-blocking) call.
const PLAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer and its `X-Consul-Index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed<T> {
    /// `X-Consul-Index` (0 when missing).
    pub index: u64,
    /// The decoded body.
    pub value: T,
}

/// The Connect CA's trust roots (`/v1/agent/connect/ca/roots`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CaRoots {
    /// The ID of the root that signs new leaves.
    #[serde(rename = "ActiveRootID", default)]
    pub active_root_id: String,
    /// `<cluster uuid>.consul`: the host part of every SPIFFE ID of the cluster.
    #[serde(rename = "TrustDomain", default)]
    pub trust_domain: String,
    /// Every root still trusted (the old one stays during a rotation).
    #[serde(rename = "Roots", default)]
    pub roots: Vec<CaRoot>,
}

/// One trust root.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CaRoot {
    /// Root ID (its key id).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The root certificate, PEM.
    #[serde(rename = "RootCert", default)]
    pub root_cert_pem: String,
    /// Intermediates (PEM) that chain to this root, if any.
    #[serde(rename = "IntermediateCerts", default)]
    pub intermediate_certs: Option<Vec<String>>,
    /// Whether this root signs new leaves.
    #[serde(rename = "Active", default)]
    pub active: bool,
}

/// A service's leaf certificate (`/v1/agent/connect/ca/leaf/<service>`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct LeafCert {
    /// Serial number, colon-separated hex.
    #[serde(rename = "SerialNumber", default)]
    pub serial_number: String,
    /// The leaf, then any intermediates, PEM.
    #[serde(rename = "CertPEM")]
    pub cert_pem: String,
    /// The private key, PEM (EC P-256, SEC1). Never printed by `Debug`.
    #[serde(rename = "PrivateKeyPEM")]
    pub private_key_pem: String,
    /// The service it was issued for.
    #[serde(rename = "Service", default)]
    pub service: String,
    /// `spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>`.
    #[serde(rename = "ServiceURI", default)]
    pub service_uri: String,
    /// Not valid before (RFC 3339).
    #[serde(rename = "ValidAfter", default)]
    pub valid_after: String,
    /// Not valid after (RFC 3339).
    #[serde(rename = "ValidBefore", default)]
    pub valid_before: String,
    /// Raft index of the issuance.
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

impl std::fmt::Debug for LeafCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCert")
            .field("serial_number", &self.serial_number)
            .field("service_uri", &self.service_uri)
            .field("valid_before", &self.valid_before)
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The agent's decision on an inbound connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Authorization {
    /// Allowed or not.
    #[serde(rename = "Authorized")]
    pub authorized: bool,
    /// Why (the matching intention, or the default).
    #[serde(rename = "Reason", default)]
    pub reason: String,
}

#[derive(Serialize)]
struct AuthorizeRequest<'a> {
    #[serde(rename = "Target")]
    target: &'a str,
    #[serde(rename = "ClientCertURI")]
    client_cert_uri: &'a str,
    #[serde(rename = "ClientCertSerial")]
    client_cert_serial: &'a str,
}

/// The Connect endpoints of the local agent.
#[derive(Debug, Clone)]
pub struct ConnectCa {
    pub(crate) http: ConsulHttp,
}

impl ConnectCa {
    /// Calls the agent at `config`.
    pub fn new(config: &ConsulConfig) -> Self {
        Self {
            http: ConsulHttp::new(config),
        }
    }

    /// The trust roots; with `index` > 0 a blocking query that returns when
    /// they change or after `wait` (capped at Consul's 10 min).
    pub async fn roots(&self, index: u64, wait: Duration) -> Result<Indexed<CaRoots>, ConsulError> {
        let answer = self
            .http
            .get(
                ROOTS_PATH,
                &blocking(ROOTS_PATH, index, wait),
                http_timeout(index, wait),
            )
            .await?;
        decode(ROOTS_PATH, answer)
    }

    /// `service`'s leaf certificate (the agent issues one on first request and
    /// renews it before it expires); with `index` > 0 a blocking query.
    pub async fn leaf(
        &self,
        service: &str,
        index: u64,
        wait: Duration,
    ) -> Result<Indexed<LeafCert>, ConsulError> {
        let path = format!("{LEAF_PATH}/{}", encode(service));
        let answer = self
            .http
            .get(
                LEAF_PATH,
                &blocking(&path, index, wait),
                http_timeout(index, wait),
            )
            .await?;
        decode(LEAF_PATH, answer)
    }

    /// Whether the client identified by `client_cert_uri` (a SPIFFE ID) may
    /// connect to `target` (a service name), by the intentions.
    pub async fn authorize(
        &self,
        target: &str,
        client_cert_uri: &str,
        client_cert_serial: &str,
    ) -> Result<Authorization, ConsulError> {
        let body = serde_json::to_vec(&AuthorizeRequest {
            target,
            client_cert_uri,
            client_cert_serial,
        })
        .expect("a plain struct serializes");
        let answer = self
            .http
            .send(
                Method::POST,
                AUTHORIZE_PATH,
                AUTHORIZE_PATH,
                Bytes::from(body),
                PLAIN_TIMEOUT,
            )
            .await?;
        decode(AUTHORIZE_PATH, answer).map(|indexed| indexed.value)
    }
}

/// `path?index=…&wait=…ms` for a blocking query, `path` for a plain read.
fn blocking(path: &str, index: u64, wait: Duration) -> String {
    if index == 0 {
        return path.to_owned();
    }
    let wait = if wait.is_zero() {
        DEFAULT_WAIT
    } else {
        wait.min(MAX_WAIT)
    };
    format!("{path}?index={index}&wait={}ms", wait.as_millis().max(1))
}

fn http_timeout(index: u64, wait: Duration) -> Duration {
    if index == 0 {
        return PLAIN_TIMEOUT;
    }
    let wait = if wait.is_zero() {
        DEFAULT_WAIT
    } else {
        wait.min(MAX_WAIT)
    };
    wait + wait / 16 + HTTP_SLACK
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    path: &str,
    answer: Answer,
) -> Result<Indexed<T>, ConsulError> {
    if answer.status != StatusCode::OK {
        return Err(ConsulError::Status {
            method: "-".into(),
            path: path.to_owned(),
            status: answer.status.as_u16(),
            body: excerpt(&answer.body),
        });
    }
    let value = serde_json::from_slice(&answer.body).map_err(|error| ConsulError::Decode {
        path: path.to_owned(),
        message: error.to_string(),
    })?;
    Ok(Indexed {
        index: parse_index(&answer.headers),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_queries_carry_index_and_wait() {
        assert_eq!(blocking(ROOTS_PATH, 0, Duration::from_secs(1)), ROOTS_PATH);
        assert_eq!(
            blocking("/v1/agent/connect/ca/leaf/users", 7, Duration::from_secs(2)),
            "/v1/agent/connect/ca/leaf/users?index=7&wait=2000ms"
        );
        assert_eq!(
            blocking(ROOTS_PATH, 1, Duration::from_secs(3600)),
            format!("{ROOTS_PATH}?index=1&wait=600000ms")
        );
        assert!(http_timeout(5, Duration::from_secs(60)) > Duration::from_secs(60));
    }

    #[test]
    fn decodes_consul_1_8_answers() {
        let roots: CaRoots = serde_json::from_str(
            r#"{"ActiveRootID":"ab:cd","TrustDomain":"11111111-2222-3333-4444-555555555555.consul",
                "Roots":[{"ID":"ab:cd","Name":"Consul CA Root Cert","SerialNumber":7,
                "RootCert":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                "IntermediateCerts":null,"Active":true,"CreateIndex":8,"ModifyIndex":8}]}"#,
        )
        .unwrap();
        assert_eq!(roots.roots.len(), 1);
        assert!(roots.roots[0].active);
        assert!(roots.trust_domain.ends_with(".consul"));
        let leaf: LeafCert = serde_json::from_str(
            r#"{"SerialNumber":"0a:0b","CertPEM":"c","PrivateKeyPEM":"secret-key","Service":"users",
                "ServiceURI":"spiffe://x.consul/ns/default/dc/dc1/svc/users",
                "ValidAfter":"2026-01-01T00:00:00Z","ValidBefore":"2026-01-04T00:00:00Z",
                "CreateIndex":10,"ModifyIndex":10}"#,
        )
        .unwrap();
        assert_eq!(leaf.service, "users");
        assert!(!format!("{leaf:?}").contains("secret-key"));
        let decision: Authorization =
            serde_json::from_str(r#"{"Authorized":false,"Reason":"Matched intention"}"#).unwrap();
        assert!(!decision.authorized);
    }
}
