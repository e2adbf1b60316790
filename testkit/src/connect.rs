//! Consul Connect from a test's point of view: certificate files from the
//! test's agent (what `mesh cert` writes), grpcurl over mTLS, intentions.

use std::path::{Path, PathBuf};

use crate::{
    consul::ConsulAgent,
    grpcurl::{self, GrpcurlOutput},
};

/// `ca.pem`, `cert.pem` and `key.pem` of one Connect identity, in a temp dir
/// removed on drop.
#[derive(Debug)]
pub struct CertFiles {
    /// The identity (service name) the leaf was issued for.
    pub identity: String,
    /// The leaf's serial number as Consul writes it.
    pub serial: String,
    dir: tempfile::TempDir,
}

impl CertFiles {
    /// The folder holding the three files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA roots.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The leaf and its intermediates.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The leaf's private key.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// The grpcurl flags for these files: `-cacert ca.pem -cert cert.pem
    /// -key key.pem -insecure`. `-insecure` because Connect leaves name
    /// their service only in a SPIFFE URI SAN, which grpcurl (Go's
    /// crypto/tls) cannot match against a host name; the server still
    /// verifies and authorizes the client certificate.
    pub fn grpcurl_flags(&self) -> Vec<String> {
        vec![
            "-cacert".into(),
            self.ca().display().to_string(),
            "-cert".into(),
            self.cert().display().to_string(),
            "-key".into(),
            self.key().display().to_string(),
            "-insecure".into(),
        ]
    }
}

impl ConsulAgent {
    /// Fetches a leaf for `identity` (any name: `operator`, `users`…) and the
    /// roots from the agent's Connect CA and writes them as files.
    pub fn cert_files(&self, identity: &str) -> CertFiles {
        let leaf = self.get_json(&format!("/v1/agent/connect/ca/leaf/{identity}"));
        let roots = self.get_json("/v1/agent/connect/ca/roots");
        let ca: String = roots["Roots"]
            .as_array()
            .expect("roots")
            .iter()
            .filter_map(|root| root["RootCert"].as_str())
            .map(|pem| format!("{}\n", pem.trim_end()))
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("mesh-test-certs-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca).expect("write ca.pem");
        std::fs::write(
            dir.path().join("cert.pem"),
            leaf["CertPEM"].as_str().expect("CertPEM"),
        )
        .expect("write cert.pem");
        std::fs::write(
            dir.path().join("key.pem"),
            leaf["PrivateKeyPEM"].as_str().expect("PrivateKeyPEM"),
        )
        .expect("write key.pem");
        CertFiles {
            identity: identity.to_owned(),
            serial: leaf["SerialNumber"].as_str().unwrap_or_default().to_owned(),
            dir,
        }
    }

    /// Creates or updates the intention `source → destination` (`allow` or `deny`).
    pub fn set_intention(&self, source: &str, destination: &str, action: &str) {
        if let Some(id) = self.intention_id(source, destination) {
            let body = intention_body(source, destination, action);
            self.send("PUT", &format!("/v1/connect/intentions/{id}"), &body);
        } else {
            let body = intention_body(source, destination, action);
            self.send("POST", "/v1/connect/intentions", &body);
        }
    }

    /// Deletes the intention `source → destination` if there is one.
    pub fn delete_intention(&self, source: &str, destination: &str) {
        if let Some(id) = self.intention_id(source, destination) {
            self.send("DELETE", &format!("/v1/connect/intentions/{id}"), "");
        }
    }

    fn intention_id(&self, source: &str, destination: &str) -> Option<String> {
        let list = self.get_json("/v1/connect/intentions");
        list.as_array()?
            .iter()
            .find(|intention| {
                intention["SourceName"] == source && intention["DestinationName"] == destination
            })
            .and_then(|intention| intention["ID"].as_str().map(str::to_owned))
    }

    /// `method path` with a JSON body; panics unless the agent answers 2xx.
    pub fn send(&self, method: &str, path: &str, body: &str) -> String {
        self.client()
            .request(method, path, Some(body))
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    }
}

fn intention_body(source: &str, destination: &str, action: &str) -> String {
    serde_json::json!({
        "SourceName": source,
        "DestinationName": destination,
        "SourceType": "consul",
        "Action": action,
    })
    .to_string()
}

/// Runs `grpcurl <cert flags> -max-time 10 <args…>` over mTLS with `certs`.
pub fn grpcurl_mtls(certs: &CertFiles, args: &[&str]) -> GrpcurlOutput {
    grpcurl::run(certs.grpcurl_flags(), args)
}
