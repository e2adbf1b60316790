//! HTTPS for the gateway's port (`--tls-cert`, `--tls-key`): TLS 1.2 and
//! 1.3 with the ring provider (the project's one TLS stack), ALPN `h2` and
//! `http/1.1`. The certificate files are read again when they change (a
//! renewed certificate needs no restart); a change that does not load
//! keeps the previous certificate.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The gateway's TLS acceptor with a live certificate.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<LiveCertificate>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.resolver.files)
            .finish()
    }
}

impl Tls {
    /// Loads the files (an error when they do not load).
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let certified = certified_key(&files)?;
        let resolver = Arc::new(LiveCertificate {
            current: RwLock::new(Arc::new(certified)),
            seen: RwLock::new(fingerprint(&files)),
            files,
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Checks the files every `period` and swaps in a changed certificate.
    pub fn spawn_reload(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let resolver = self.resolver.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                resolver.reload_if_changed();
            }
        })
    }
}

type Fingerprint = Vec<Option<(u64, SystemTime)>>;

fn fingerprint(files: &TlsFiles) -> Fingerprint {
    [&files.cert, &files.key]
        .iter()
        .map(|path| {
            std::fs::metadata(path).ok().map(|meta| {
                (
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                )
            })
        })
        .collect()
}

#[derive(Debug)]
struct LiveCertificate {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    seen: RwLock<Fingerprint>,
}

impl LiveCertificate {
    fn reload_if_changed(&self) {
        let now = fingerprint(&self.files);
        if *self.seen.read().unwrap_or_else(|p| p.into_inner()) == now {
            return;
        }
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = now;
        match certified_key(&self.files) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "the TLS certificate changed but does not load: keeping the previous one")
            }
        }
    }
}

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &PathBuf, reason: String| TlsError::File {
        path: path.clone(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|error| file_error(&files.cert, error.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|error| file_error(&files.cert, error.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(&files.cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|error| file_error(&files.key, error.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|error| file_error(&files.key, error.to_string()))?;
    Ok(CertifiedKey::new(certs, signing))
}
