//! Secret files (ACL tokens, the agent's configuration, the environment's
//! description): mode 0600 in a 0700 folder, replaced atomically — a reader
//! (a service re-reading `CONSUL_HTTP_TOKEN_FILE`) sees the old or the new
//! content, never half of it.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use crate::Error;

/// The token file of `name` in `dir`: `<dir>/<name>.token`.
pub fn token_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.token"))
}

/// The trimmed content of `path`; `None` if it does not exist or is empty.
pub fn read(path: &Path) -> Result<Option<String>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|text| !text.is_empty())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::io("cannot read", path, error)),
    }
}

/// Writes `secret` (and a newline) to `path`, mode 0600, its folder 0700,
/// through a temporary file and a rename; a file that already holds it is
/// left alone (it may be a read-only mounted Secret).
pub fn write(path: &Path, secret: &str) -> Result<(), Error> {
    if read(path).ok().flatten().as_deref() == Some(secret.trim()) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("cannot restrict", dir, e))?;
    let name = path
        .file_name()
        .map_or_else(Default::default, |name| name.to_string_lossy());
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| Error::io("cannot create", &temporary, e))?;
    let written = writeln!(file, "{}", secret.trim_end())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("cannot write", &temporary, e))
        .and_then(|()| {
            fs::rename(&temporary, path).map_err(|e| Error::io("cannot replace", path, e))
        });
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// The token in `path`, or a new random one (a UUID, as Consul's) written there.
pub fn existing_or_new(path: &Path) -> Result<String, Error> {
    if let Some(token) = read(path)? {
        return Ok(token);
    }
    let token = uuid::Uuid::new_v4().to_string();
    write(path, &token)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_path(&dir.path().join("secrets"), "users");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, "first").unwrap();
        write(&path, "second").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("second"));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let folder = path.parent().unwrap();
        assert_eq!(
            fs::metadata(folder).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::read_dir(folder).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn a_new_token_is_a_uuid_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_path(dir.path(), "master");
        let token = existing_or_new(&path).unwrap();
        assert!(uuid::Uuid::parse_str(&token).is_ok());
        assert_eq!(existing_or_new(&path).unwrap(), token);
    }
}
