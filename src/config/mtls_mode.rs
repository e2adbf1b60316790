//! `--mtls=required|off` (`MESH_MTLS`).

/// Whether the mesh's gRPC traffic uses Connect mTLS.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtlsMode {
    /// Every service port accepts only mTLS with a Connect certificate, and
    /// every client dials only mTLS, whatever an instance's registration says.
    #[default]
    Required,
    /// Plaintext end to end (local experiments only; logged as a warning).
    Off,
}

impl MtlsMode {
    /// `required` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Required => "required",
            MtlsMode::Off => "off",
        }
    }

    /// Logs the warning that `off` deserves (call once at start-up).
    pub fn warn_if_off(self, binary: &str) {
        if self == MtlsMode::Off {
            tracing::warn!(
                binary,
                "--mtls=off: mesh traffic is plaintext, unauthenticated and unauthorized; use only for local experiments"
            );
        }
    }
}

impl std::fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
