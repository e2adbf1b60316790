//! `<state>/env.json`: what a running local environment is — the agent's
//! address, its CA and every token file (paths, never tokens) — written
//! (0600) by whoever started it and removed when it stops. Commands run in
//! the checkout find it ([`Description::find`]) and use it when no Consul
//! variable or flag says otherwise.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{secrets, Error};

/// The description's file name, in the state folder.
pub const FILE_NAME: &str = "env.json";
/// The state folder `mesh up` uses unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = ".mesh";
/// The most of a description file read.
const MAX_BYTES: u64 = 64 * 1024;

/// A running local environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// The Consul agent.
    pub consul: ConsulDescription,
}

/// How to reach the local Consul agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsulDescription {
    /// `http://127.0.0.1:<port>` or `https://…`.
    pub url: String,
    /// The CA that signed its certificate (HTTPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Token files by holder (`master`, `mesh-read`, `users`…), when ACLs are on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, PathBuf>,
    /// The agent's process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl Description {
    /// `<state_dir>/env.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE_NAME)
    }

    /// Writes it to `<state_dir>/env.json` (0600, replaced atomically).
    pub fn write(&self, state_dir: &Path) -> Result<PathBuf, Error> {
        let path = Self::path(state_dir);
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Description {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        secrets::write(&path, &text)?;
        Ok(path)
    }

    /// Reads the description at `path`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        use std::io::Read as _;
        let file = std::fs::File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
        let mut text = String::new();
        file.take(MAX_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| Error::io("cannot read", path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Description {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Removes `<state_dir>/env.json` (the environment stopped).
    pub fn remove(state_dir: &Path) {
        let _ = std::fs::remove_file(Self::path(state_dir));
    }

    /// The first `<dir>/.mesh/env.json` in `from` or its ancestors (as git
    /// finds `.git`): where `mesh up` run in the checkout describes itself.
    pub fn find(from: &Path) -> Option<PathBuf> {
        from.ancestors()
            .map(|dir| Self::path(&dir.join(DEFAULT_STATE_DIR)))
            .find(|path| path.is_file())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn sample() -> Description {
        Description {
            consul: ConsulDescription {
                url: "https://127.0.0.1:8500".into(),
                ca_file: Some("/checkout/.mesh/consul/tls/ca.pem".into()),
                tokens: BTreeMap::from([(
                    "mesh-read".into(),
                    "/checkout/.mesh/secrets/mesh-read.token".into(),
                )]),
                pid: Some(42),
            },
        }
    }

    #[test]
    fn written_private_read_back_and_found_from_below() {
        let checkout = tempfile::tempdir().unwrap();
        let state = checkout.path().join(DEFAULT_STATE_DIR);
        let path = sample().write(&state).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Description::read(&path).unwrap(), sample());
        let below = checkout.path().join("services/users/src");
        std::fs::create_dir_all(&below).unwrap();
        assert_eq!(Description::find(&below), Some(path));
        Description::remove(&state);
        assert_eq!(Description::find(&below), None);
    }

    #[test]
    fn a_broken_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "{\"consul\": 7}").unwrap();
        let error = Description::read(&path).unwrap_err().to_string();
        assert!(
            error.contains("not a local environment description"),
            "{error}"
        );
    }
}
