//! A Connect identity's key material, parsed and checked: the leaf chain and
//! key from `/v1/agent/connect/ca/leaf/<service>`, the roots from
//! `/v1/agent/connect/ca/roots`.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::RootCertStore;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

use super::spiffe::SpiffeId;

/// Why key material cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    /// A PEM block could not be read.
    #[error("cannot read the {what} PEM: {message}")]
    Pem {
        /// Which PEM.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// No certificate where one was expected.
    #[error("no certificate in the {0} PEM")]
    Empty(&'static str),
    /// A certificate is not valid X.509.
    #[error("the {what} certificate is not valid X.509: {message}")]
    X509 {
        /// Which certificate.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A root could not be trusted.
    #[error("cannot trust a Connect CA root: {0}")]
    Root(String),
    /// The certificate carries no (or more than one) Consul service identity.
    #[error("the certificate has no single Consul service identity as URI SAN (found {0:?})")]
    NoIdentity(Vec<String>),
    /// The leaf's trust domain is not the roots'.
    #[error("the leaf's trust domain {leaf} is not the CA's {roots}")]
    TrustDomain {
        /// In the leaf.
        leaf: String,
        /// In the roots.
        roots: String,
    },
    /// The leaf has expired.
    #[error("the leaf certificate of {identity} expired at {expired_unix} (unix seconds); refusing to use it")]
    Expired {
        /// Whose.
        identity: String,
        /// When (unix seconds).
        expired_unix: u64,
    },
}

/// A peer certificate's Connect identity and serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The SPIFFE ID in the URI SAN.
    pub identity: SpiffeId,
    /// Serial number, colon-separated lowercase hex (Consul's format).
    pub serial: String,
    /// Not valid after.
    pub not_after: SystemTime,
}

/// Parses a DER certificate's single Consul service identity, serial and expiry.
pub fn inspect(der: &[u8]) -> Result<PeerCertificate, CredentialsError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).map_err(|error| {
        CredentialsError::X509 {
            what: "peer",
            message: error.to_string(),
        }
    })?;
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uris.push((*uri).to_owned());
            }
        }
    }
    let identity = match uris.as_slice() {
        [uri] => SpiffeId::parse(uri).map_err(|_| CredentialsError::NoIdentity(uris.clone()))?,
        _ => return Err(CredentialsError::NoIdentity(uris)),
    };
    let not_after = UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0));
    Ok(PeerCertificate {
        identity,
        serial: serial_hex(cert.raw_serial()),
        not_after,
    })
}

/// `0a:1b:…`, as Consul writes serial numbers.
fn serial_hex(bytes: &[u8]) -> String {
    let bytes = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A service's current Connect credentials.
#[derive(Debug)]
pub struct Credentials {
    /// Our identity (from the leaf's URI SAN).
    pub identity: SpiffeId,
    /// The leaf's serial number (colon hex).
    pub serial: String,
    /// The leaf's expiry.
    pub not_after: SystemTime,
    /// The CA's trust domain (what every peer's identity must carry).
    pub trust_domain: String,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) roots: Arc<RootCertStore>,
}

impl Credentials {
    /// Reads the roots (PEM, one or more blocks each), the leaf chain (leaf
    /// first, then intermediates) and its key. `trust_domain` is the roots'
    /// `TrustDomain`; the leaf must belong to it.
    pub fn from_pem(
        roots_pem: &[&str],
        trust_domain: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, CredentialsError> {
        let mut roots = RootCertStore::empty();
        for pem in roots_pem {
            for der in certificates("root", pem)? {
                roots
                    .add(der)
                    .map_err(|error| CredentialsError::Root(error.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(CredentialsError::Empty("roots"));
        }
        let chain = certificates("leaf", cert_pem)?;
        let leaf = inspect(&chain[0])?;
        let trust_domain = trust_domain.to_ascii_lowercase();
        if leaf.identity.trust_domain != trust_domain {
            return Err(CredentialsError::TrustDomain {
                leaf: leaf.identity.trust_domain,
                roots: trust_domain,
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|error| {
            CredentialsError::Pem {
                what: "private key",
                message: error.to_string(),
            }
        })?;
        Ok(Self {
            identity: leaf.identity,
            serial: leaf.serial,
            not_after: leaf.not_after,
            trust_domain,
            chain,
            key,
            roots: Arc::new(roots),
        })
    }

    /// `Err(Expired)` once the leaf is past its expiry (a stale leaf is never used).
    pub fn check_fresh(&self, now: SystemTime) -> Result<(), CredentialsError> {
        if now >= self.not_after {
            return Err(CredentialsError::Expired {
                identity: self.identity.to_string(),
                expired_unix: unix_seconds(self.not_after),
            });
        }
        Ok(())
    }
}

/// Seconds since the epoch (0 before it).
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

fn certificates(
    what: &'static str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CredentialsError::Pem {
            what,
            message: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CredentialsError::Empty(what));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_colon_hex_without_the_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0x8a, 0x01]), "8a:01");
        assert_eq!(serial_hex(&[0x0a]), "0a");
        assert_eq!(serial_hex(&[0x00]), "00");
    }
}
