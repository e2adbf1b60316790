//! Where an operator's command finds Consul. Consul's own variables and the
//! `--consul-*` flags win, with Consul's meaning; when none is given, the
//! local environment `mesh up` (or `mesh env`) describes in `.mesh/env.json`,
//! found from the current folder up (as git finds `.git`), with the token
//! the command needs; else Consul's default address. So in the checkout,
//! `mesh status` and `mesh cert operator --out DIR` stay that short against
//! an agent with ACLs default-deny and HTTPS.

use std::path::{Path, PathBuf};

use discovery::{ConfigError, ConsulConfig, ConsulSettings};
use localenv::{ConsulDescription, Description};
use mesh::config::ConsulArgs;

/// Why a command cannot tell where Consul is.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The variables or flags given are not valid settings.
    #[error(transparent)]
    Given(#[from] ConfigError),
    /// The local environment's description could not be read.
    #[error(transparent)]
    Description(#[from] localenv::Error),
    /// The local environment's description holds invalid settings.
    #[error("the local environment described in {}", path.display())]
    Local {
        /// The description.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ConfigError,
    },
    /// The current folder could not be read.
    #[error("cannot read the current folder")]
    CurrentDir(#[source] std::io::Error),
}

/// Which of the local environment's tokens a command uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// `mesh-read`: service:read and node:read (`mesh status`).
    ReadOnly,
    /// `master`: a certificate for any identity, the ACL bootstrap. The local
    /// environment is its operator's: they hold its management token.
    Management,
}

impl Holder {
    fn token_name(self) -> &'static str {
        match self {
            Self::ReadOnly => "mesh-read",
            Self::Management => "master",
        }
    }
}

/// Where the settings came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Consul's variables or the flags (or nothing: the default address).
    Given,
    /// The local environment described in this file.
    Local(PathBuf),
}

impl Source {
    /// A hint to add to an error, naming the description when it was used.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Given => None,
            Self::Local(path) => Some(format!(
                "(the local environment described in {}; is its `mesh up` still running? \
                 CONSUL_HTTP_ADDR or --consul-addr point elsewhere)",
                path.display()
            )),
        }
    }
}

/// The Consul settings of a command run in `dir` (the current folder).
pub fn resolve(
    args: &ConsulArgs,
    holder: Holder,
    dir: &Path,
) -> Result<(ConsulConfig, Source), SettingsError> {
    if args.is_given() {
        return Ok((args.config()?, Source::Given));
    }
    let Some(path) = Description::find(dir) else {
        return Ok((args.config()?, Source::Given));
    };
    let description = Description::read(&path)?;
    let config = match settings(&description.consul, holder).build() {
        Ok(config) => config,
        Err(source) => return Err(SettingsError::Local { path, source }),
    };
    Ok((config, Source::Local(path)))
}

/// [`resolve`] from the current folder.
pub fn resolve_here(
    args: &ConsulArgs,
    holder: Holder,
) -> Result<(ConsulConfig, Source), SettingsError> {
    let here = std::env::current_dir().map_err(SettingsError::CurrentDir)?;
    resolve(args, holder, &here)
}

fn settings(consul: &ConsulDescription, holder: Holder) -> ConsulSettings {
    ConsulSettings {
        address: Some(consul.url.clone()),
        ca_file: consul.ca_file.clone(),
        token_file: consul.tokens.get(holder.token_name()).cloned(),
        ..ConsulSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The flags with nothing given (built by hand: parsing would read the
    /// test process's own CONSUL_* variables).
    fn nothing() -> ConsulArgs {
        ConsulArgs {
            address: None,
            ssl: None,
            ssl_verify: None,
            ca_file: None,
            ca_path: None,
            client_cert: None,
            client_key: None,
            tls_server_name: None,
            token: None,
            token_file: None,
        }
    }

    /// A checkout with `.mesh/env.json` describing a plain agent on `url`
    /// and two token files (a secure agent's description, with its CA, is
    /// exercised against a real agent in cli/tests/secure.rs).
    fn checkout(url: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let read = dir.path().join("read.token");
        let master = dir.path().join("master.token");
        std::fs::write(&read, "11111111-1111-4111-8111-111111111111\n").unwrap();
        std::fs::write(&master, "22222222-2222-4222-8222-222222222222\n").unwrap();
        Description {
            consul: ConsulDescription {
                url: url.to_owned(),
                ca_file: None,
                tokens: BTreeMap::from([
                    ("mesh-read".to_owned(), read),
                    ("master".to_owned(), master),
                ]),
                pid: None,
            },
        }
        .write(&dir.path().join(".mesh"))
        .unwrap();
        dir
    }

    #[test]
    fn the_local_environment_is_used_only_when_nothing_is_given() {
        let checkout = checkout("http://127.0.0.1:18555");
        let below = checkout.path().join("services/users");
        std::fs::create_dir_all(&below).unwrap();
        let (config, source) = resolve(&nothing(), Holder::ReadOnly, &below).unwrap();
        assert_eq!(config.base_url(), "http://127.0.0.1:18555");
        assert!(config.has_token());
        assert_eq!(
            source,
            Source::Local(checkout.path().join(".mesh/env.json"))
        );
        assert!(source.hint().unwrap().contains(".mesh/env.json"));
        // Any variable or flag wins over the description.
        let given = ConsulArgs {
            address: Some("127.0.0.1:18666".into()),
            ..nothing()
        };
        let (config, source) = resolve(&given, Holder::ReadOnly, &below).unwrap();
        assert_eq!(config.base_url(), "http://127.0.0.1:18666");
        assert_eq!(source, Source::Given);
        // Nothing described: Consul's default address.
        let elsewhere = tempfile::tempdir().unwrap();
        let (config, source) = resolve(&nothing(), Holder::ReadOnly, elsewhere.path()).unwrap();
        assert_eq!(config.base_url(), "http://127.0.0.1:8500");
        assert_eq!(source, Source::Given);
    }

    #[test]
    fn each_command_gets_its_own_token_file() {
        let checkout = checkout("http://127.0.0.1:18555");
        let description = Description::read(&checkout.path().join(".mesh/env.json")).unwrap();
        let read = settings(&description.consul, Holder::ReadOnly);
        assert_eq!(read.token_file, Some(checkout.path().join("read.token")));
        let master = settings(&description.consul, Holder::Management);
        assert_eq!(
            master.token_file,
            Some(checkout.path().join("master.token"))
        );
    }
}
