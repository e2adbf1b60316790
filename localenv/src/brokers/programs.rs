//! Where the brokers' programs are: `PATH` first, then Debian's place.

use std::path::PathBuf;

use crate::Error;

/// `name` from `PATH`, else at `fallback`; a clear error naming `package`
/// when it is in neither.
pub fn system_program(name: &str, fallback: &str, package: &'static str) -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    }) {
        return Ok(path);
    }
    let fallback = PathBuf::from(fallback);
    if fallback.is_file() {
        Ok(fallback)
    } else {
        Err(Error::MissingProgram {
            name: name.to_owned(),
            fallback,
            package,
        })
    }
}

/// Erlang's `epmd`: the newest `/usr/lib/erlang/erts-*/bin/epmd`, else from
/// `PATH`.
pub fn epmd() -> Result<PathBuf, Error> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/erlang")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| {
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|name| name.starts_with("erts-"))
                })
                .map(|path| path.join("bin/epmd"))
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    match candidates.pop() {
        Some(path) => Ok(path),
        None => system_program("epmd", "/usr/bin/epmd", "rabbitmq-server"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_package() {
        let error = system_program(
            "no-such-broker-xyz",
            "/nonexistent/no-such-broker-xyz",
            "xyz-server",
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("no-such-broker-xyz") && text.contains("xyz-server package"),
            "{text}"
        );
        assert_eq!(
            system_program("sh", "/bin/sh", "dash")
                .unwrap()
                .file_name()
                .unwrap(),
            "sh"
        );
    }
}
