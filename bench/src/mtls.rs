//! `--mtls` and `--identity`, as the benchmark's clients read them: with `required` (the default) every call presents a Connect
//! certificate of `--identity` from the agent and accepts only servers that
//! prove the target's identity; `off` is plaintext.

use std::time::Duration;

use anyhow::Context as _;
use mesh::{
    config::MtlsMode,
    connect::{Identity, OPERATOR},
};

/// How long to wait for the agent's first certificate.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(15);

/// Client-side mTLS flags.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct MtlsArgs {
    /// `required`: Connect mTLS to every service (never plaintext); `off`:
    /// plaintext (only for a mesh started with `--mtls=off`).
    #[arg(long, env = "MESH_MTLS", value_enum, default_value_t = MtlsMode::Required)]
    pub(crate) mtls: MtlsMode,

    /// The Connect identity to present (a leaf for it is asked from the agent;
    /// the intentions decide what it may call).
    #[arg(long, env = "MESH_IDENTITY", default_value = OPERATOR)]
    pub(crate) identity: String,
}

impl MtlsArgs {
    /// The identity to present, ready (`None` with `--mtls=off`).
    pub(crate) async fn client_identity(
        &self,
        consul: &discovery::ConsulConfig,
    ) -> anyhow::Result<Option<Identity>> {
        match self.mtls {
            MtlsMode::Off => {
                self.mtls.warn_if_off("mesh-bench");
                eprintln!(
                    "warning: --mtls=off: calls are plaintext, unauthenticated and unauthorized"
                );
                Ok(None)
            }
            MtlsMode::Required => {
                let identity = Identity::watch(consul, &self.identity);
                identity.ready(IDENTITY_TIMEOUT).await.with_context(|| {
                    format!(
                        "cannot get a Connect certificate for {:?} from the agent at {} (use --mtls=off for a plaintext mesh)",
                        self.identity,
                        consul.address()
                    )
                })?;
                Ok(Some(identity))
            }
        }
    }
}
