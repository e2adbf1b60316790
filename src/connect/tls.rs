//! rustls configurations built from [`Credentials`]: the server's (client
//! certificate required, verified against the current roots) and the
//! client's per target service (chain verified by webpki, then the server's
//! SPIFFE ID compared with the exact identity of the target).

use std::sync::{Arc, LazyLock};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{ParsedCertificate, WebPkiClientVerifier},
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};

use super::{
    credentials::{inspect, Credentials},
    spiffe::SpiffeId,
};

/// ALPN: gRPC is HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";

/// The one crypto provider: `ring`.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}

/// TLS 1.3 only, ALPN `h2`, a client certificate chaining to the roots required.
pub(crate) fn server_config(credentials: &Credentials) -> Result<Arc<ServerConfig>, rustls::Error> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(credentials.roots.clone(), provider())
            .build()
            .map_err(|error| rustls::Error::General(error.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(credentials.chain.clone(), credentials.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// TLS 1.3, ALPN `h2`, our leaf as client certificate, and a server that must
/// be exactly `target` (same trust domain as the roots, our namespace and datacenter).
pub(crate) fn client_config(
    credentials: &Credentials,
    target: &str,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let expected = SpiffeId {
        trust_domain: credentials.trust_domain.clone(),
        ..credentials.identity.sibling(target)
    };
    let verifier = Arc::new(SpiffeServerVerifier {
        roots: credentials.roots.clone(),
        expected,
        provider: provider(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(credentials.chain.clone(), credentials.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The server presented a valid certificate of another identity.
#[derive(Debug, thiserror::Error)]
#[error("the server is {found}, not the expected {expected}")]
pub struct WrongPeerIdentity {
    /// What the client dialled for.
    pub expected: String,
    /// What the certificate says.
    pub found: String,
}

/// webpki's chain verification, then the exact SPIFFE ID. The TLS server name
/// is not used: Connect leaves carry a URI SAN only.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
}

fn other(error: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let peer = inspect(end_entity).map_err(other)?;
        if peer.identity != self.expected {
            return Err(other(WrongPeerIdentity {
                expected: self.expected.to_string(),
                found: peer.identity.to_string(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
