//! HTTPS to the agent: rustls (ring provider) with the CA file or the
//! system's trust store, an optional client certificate, the server name to
//! verify, and Consul's `CONSUL_HTTP_SSL_VERIFY=false` escape hatch.

use std::{fmt, path::PathBuf, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::error::ConfigError;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) ca_path: Option<PathBuf>,
    pub(crate) client_cert: Option<PathBuf>,
    pub(crate) client_key: Option<PathBuf>,
    pub(crate) server_name: String,
    pub(crate) verify: bool,
}

/// The loaded TLS client configuration for one agent.
pub(crate) struct AgentTls {
    settings: TlsSettings,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentTls")
            .field("ca_file", &self.settings.ca_file)
            .field("ca_path", &self.settings.ca_path)
            .field("client_cert", &self.settings.client_cert)
            .field("server_name", &self.settings.server_name)
            .field("verify", &self.settings.verify)
            .finish()
    }
}

/// The one crypto provider of the project.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl AgentTls {
    /// Reads the PEM files and builds the rustls configuration.
    pub(crate) fn load(settings: &TlsSettings) -> Result<Self, ConfigError> {
        let tls_error = |reason: String| ConfigError::Tls { reason };
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| tls_error(error.to_string()))?;
        let builder = if settings.verify {
            builder.with_root_certificates(roots(settings)?)
        } else {
            tracing::warn!(
                "CONSUL_HTTP_SSL_VERIFY=false: the Consul agent's certificate is not verified"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        };
        // No ALPN here: hyper-rustls sets it from the HTTP versions enabled.
        let config = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "CONSUL_CLIENT_CERT")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
                    tls_error(format!(
                        "cannot read a private key from CONSUL_CLIENT_KEY {}: {error}",
                        key.display()
                    ))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| tls_error(format!("the client certificate: {error}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(tls_error(
                    "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY go together: set both or neither"
                        .to_owned(),
                ))
            }
        };
        let server_name = ServerName::try_from(settings.server_name.clone()).map_err(|_| {
            tls_error(format!(
                "CONSUL_TLS_SERVER_NAME {:?} is not a DNS name or an IP address",
                settings.server_name
            ))
        })?;
        Ok(Self {
            settings: settings.clone(),
            config: Arc::new(config),
            server_name,
        })
    }

    /// The rustls configuration.
    pub(crate) fn client_config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The name the agent's certificate must carry.
    pub(crate) fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// Where the trusted CAs came from, in words (for error hints).
    pub(crate) fn trust(&self) -> String {
        match (&self.settings.ca_file, &self.settings.ca_path) {
            (Some(file), _) => format!("CONSUL_CACERT {}", file.display()),
            (None, Some(folder)) => format!("CONSUL_CAPATH {}", folder.display()),
            (None, None) => "the system's trust store".to_owned(),
        }
    }
}

fn certificates(
    path: &PathBuf,
    variable: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let unreadable = |reason: String| ConfigError::Tls {
        reason: format!("cannot read {variable} {}: {reason}", path.display()),
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| unreadable(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unreadable(error.to_string()))?;
    if certificates.is_empty() {
        return Err(unreadable("no PEM certificate in it".to_owned()));
    }
    Ok(certificates)
}

/// The CA file's certificates, else those of every file in the CA folder,
/// else the system's trust store (Consul's order).
fn roots(settings: &TlsSettings) -> Result<RootCertStore, ConfigError> {
    let mut store = RootCertStore::empty();
    let mut add = |path: &PathBuf, variable: &str| -> Result<(), ConfigError> {
        for certificate in certificates(path, variable)? {
            store.add(certificate).map_err(|error| ConfigError::Tls {
                reason: format!("{variable} {}: {error}", path.display()),
            })?;
        }
        Ok(())
    };
    match (&settings.ca_file, &settings.ca_path) {
        (Some(file), _) => add(file, "CONSUL_CACERT")?,
        (None, Some(folder)) => {
            for file in files_in(folder)? {
                add(&file, "CONSUL_CAPATH")?;
            }
        }
        (None, None) => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ConfigError::Tls {
                    reason: "no CA certificate in the system's trust store: set CONSUL_CACERT \
                             to the CA file that signed the agent's certificate"
                        .to_owned(),
                });
            }
        }
    }
    Ok(store)
}

/// The files of the `CONSUL_CAPATH` folder (not its subfolders), in name
/// order; at least one.
fn files_in(folder: &PathBuf) -> Result<Vec<PathBuf>, ConfigError> {
    let unreadable = |reason: String| ConfigError::Tls {
        reason: format!("cannot read CONSUL_CAPATH {}: {reason}", folder.display()),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(|error| unreadable(error.to_string()))? {
        let path = entry.map_err(|error| unreadable(error.to_string()))?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(unreadable("no certificate file in it".to_owned()));
    }
    files.sort();
    Ok(files)
}

/// `CONSUL_HTTP_SSL_VERIFY=false`: any certificate, still a real handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
