//! The message brokers the mesh's events go through, as [`Supervised`]
//! processes with readiness probes: [`redis::LocalRedis`] (the default,
//! what `mesh up` runs) and [`rabbit::LocalRabbit`] (the second adapter's
//! server, for its tests). Both come from the system's packages
//! (`scripts/install-tools` installs them).
//!
//! [`Supervised`]: crate::Supervised

mod programs;
pub mod rabbit;
pub mod redis;

pub use programs::{epmd, system_program};

/// A TLS listener's port and files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    /// The TLS port.
    pub port: u16,
    /// The server's certificate.
    pub cert: std::path::PathBuf,
    /// Its private key.
    pub key: std::path::PathBuf,
    /// The CA that signed it.
    pub ca: std::path::PathBuf,
}
