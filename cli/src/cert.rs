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
    let (consul, _) = mesh_cli::consul_settings::resolve_here(
        &args.consul,
        mesh_cli::consul_settings::Holder::Management,
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
    {
        use std::os::unix::fs::DirBuilderExt as _;
        // New folders are the owner's only; an existing one keeps its mode.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
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

/// Writes `contents` to `path` with `mode` through a new, randomly named
/// temp file in the same folder — created exclusively (`O_EXCL`), never
/// through a symbolic link (`O_NOFOLLOW`), its mode set on the open file
/// before any byte is written — then synced and renamed over `path`, so a
/// reader never sees half a file and nothing planted in the folder can
/// receive or widen the key. A symbolic link at `path` itself is refused.
fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::{
        fs::Permissions,
        io::Write as _,
        os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    };
    if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink()) {
        anyhow::bail!(
            "{} is a symbolic link: refusing to write a certificate or key through it \
             (remove it, or choose another --out folder)",
            path.display()
        );
    }
    let dir = path
        .parent()
        .with_context(|| format!("{} has no folder", path.display()))?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .make_in(dir, |temp_path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(temp_path)
        })
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    temp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .and_then(|()| temp.write_all(contents.as_bytes()))
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", temp.path().display()))?;
    temp.persist(path)
        .map_err(|error| error.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt as _};

    use super::*;

    #[test]
    fn a_planted_temp_name_or_symlink_cannot_reach_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let stolen = elsewhere.path().join("stolen");
        std::fs::write(&stolen, "").expect("write");
        // The names the old code used, planted.
        symlink(&stolen, dir.path().join("key.pem.tmp")).expect("symlink");
        let key = dir.path().join("key.pem");
        write_file(&key, "-----BEGIN PRIVATE KEY-----", 0o600).expect("write");
        assert_eq!(std::fs::read_to_string(&stolen).expect("read"), "");
        let meta = std::fs::symlink_metadata(&key).expect("key");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let cert = dir.path().join("cert.pem");
        write_file(&cert, "cert", 0o644).expect("write");
        let mode = std::fs::metadata(&cert).expect("cert").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);

        let linked = dir.path().join("linked.pem");
        symlink(&stolen, &linked).expect("symlink");
        let error = write_file(&linked, "secret", 0o600).expect_err("a symlink is refused");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(std::fs::read_to_string(&stolen).expect("read"), "");
    }
}
