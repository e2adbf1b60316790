//! The secure agent's certificates, made by Consul's own `consul tls ca
//! create` and `consul tls cert create -server -dc dc1` (SANs
//! `server.dc1.consul`, `localhost`, `127.0.0.1`). Files that exist are kept,
//! so the CA stays the same from one start to the next.

use std::path::{Path, PathBuf};

use crate::Error;

/// The CA files as `consul tls ca create` names them.
const CA_CERT: &str = "consul-agent-ca.pem";
const CA_KEY: &str = "consul-agent-ca-key.pem";
/// The agent's files as `consul tls cert create -server -dc dc1` names them.
const SERVER_CERT: &str = "dc1-server-consul-0.pem";
const SERVER_KEY: &str = "dc1-server-consul-0-key.pem";
/// The most of a failed command's output an error quotes.
const OUTPUT_LIMIT: usize = 2_000;

/// The certificate files of a secure agent.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    /// The CA (what clients trust: `CONSUL_CACERT`).
    pub(crate) ca_file: PathBuf,
    /// The agent's certificate.
    pub(crate) cert_file: PathBuf,
    /// Its key.
    pub(crate) key_file: PathBuf,
}

/// Makes (or keeps) the CA and the agent's certificate in `dir`.
pub(crate) fn ensure(consul: &Path, dir: &Path) -> Result<TlsFiles, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    if !dir.join(CA_CERT).is_file() || !dir.join(CA_KEY).is_file() {
        run(consul, dir, &["tls", "ca", "create"])?;
    }
    if !dir.join(SERVER_CERT).is_file() || !dir.join(SERVER_KEY).is_file() {
        run(
            consul,
            dir,
            &["tls", "cert", "create", "-server", "-dc", "dc1"],
        )?;
    }
    Ok(TlsFiles {
        ca_file: dir.join(CA_CERT),
        cert_file: dir.join(SERVER_CERT),
        key_file: dir.join(SERVER_KEY),
    })
}

/// Runs `consul <args>` in `dir`, failing with (the start of) its output.
fn run(consul: &Path, dir: &Path, args: &[&str]) -> Result<(), Error> {
    let command = format!("consul {}", args.join(" "));
    let output = std::process::Command::new(consul)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            name: command.clone(),
            program: consul.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    if text.len() > OUTPUT_LIMIT {
        let cut = (0..=OUTPUT_LIMIT)
            .rev()
            .find(|at| text.is_char_boundary(*at))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    Err(Error::Command {
        command,
        dir: dir.to_owned(),
        output: text,
    })
}
