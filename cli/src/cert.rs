//! `mesh cert <identity> --out DIR`: a Connect leaf for any identity (e.g.
//! `operator`) from the agent, as `ca.pem`, `cert.pem` and `key.pem` — what
//! grpcurl needs to call a service that requires mTLS.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use discovery::connect::ConnectCa;

/// `mesh cert` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct CertArgs {
    /// The identity (a service name, or e.g. `operator`) to issue a leaf for.
    identity: String,

    /// Folder to write `ca.pem`, `cert.pem` and `key.pem` into (created if needed).
    #[arg(long)]
    out: PathBuf,

    /// The Consul agent (the token needs service:write on the identity).
    /// None given: in a checkout where `mesh up` runs, its agent with the
    /// management token.
    #[command(flatten)]
    consul: mesh::config::ConsulArgs,
}

/// What was written.
#[derive(Debug, Clone)]
pub(crate) struct CertFiles {
    pub(crate) dir: PathBuf,
    pub(crate) service_uri: String,
    pub(crate) serial: String,
    pub(crate) valid_before: String,
}

impl CertFiles {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// grpcurl's flags for these files. `-insecure`: Connect leaves carry
    /// their identity only as a SPIFFE URI SAN (no DNS or IP SAN), which
    /// grpcurl (Go's crypto/tls) cannot match to a host; grpcurl then does not
    /// verify the server, while the server still verifies our certificate and
    /// authorizes it by intention.
    pub(crate) fn grpcurl_flags(&self) -> String {
        format!(
            "-cacert {} -cert {} -key {} -insecure",
            self.path("ca.pem"),
            self.path("cert.pem"),
            self.path("key.pem")
        )
    }
}

/// Writes the files; prints where they are and how to use them.
pub(crate) async fn run(args: CertArgs) -> anyhow::Result<ExitCode> {
    let (consul, _) = crate::local::settings::resolve_here(
        &args.consul,
        crate::local::settings::Holder::Management,
    )?;
    let files = write(&ConnectCa::new(&consul), &args.identity, &args.out).await?;
    crate::output::print(&format!(
        "{} (serial {}, valid before {})\n  {}\n  {}\n  {}\ngrpcurl {} <host:port> list\n",
        files.service_uri,
        files.serial,
        files.valid_before,
        files.path("ca.pem"),
        files.path("cert.pem"),
        files.path("key.pem"),
        files.grpcurl_flags()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Fetches `identity`'s leaf and the roots and writes them into `dir`
/// (the key readable by its owner only).
pub(crate) async fn write(ca: &ConnectCa, identity: &str, dir: &Path) -> anyhow::Result<CertFiles> {
    let roots = ca
        .roots(0, std::time::Duration::ZERO)
        .await
        .context("cannot read the Connect CA roots from the agent")?
        .value;
    let leaf = ca
        .leaf(identity, 0, std::time::Duration::ZERO)
        .await
        .with_context(|| format!("cannot get a Connect leaf for {identity:?} from the agent"))?
        .value;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let ca_pem: String = roots
        .roots
        .iter()
        .map(|root| format!("{}\n", root.root_cert_pem.trim_end()))
        .collect();
    write_file(&dir.join("ca.pem"), &ca_pem, 0o644)?;
    write_file(&dir.join("cert.pem"), &leaf.cert_pem, 0o644)?;
    write_file(&dir.join("key.pem"), &leaf.private_key_pem, 0o600)?;
    Ok(CertFiles {
        dir,
        service_uri: leaf.service_uri,
        serial: leaf.serial_number,
        valid_before: leaf.valid_before,
    })
}

/// Writes through a temp file and a rename, so a reader never sees half a file.
fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let temp = path.with_extension("pem.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .with_context(|| format!("cannot write {}", temp.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
