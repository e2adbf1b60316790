//! Finding the project's tools (`consul`, `grpcurl`) and installing them with
//! `scripts/install-tools`, the same installer the tests use.
//!
//! Where to look, first match wins: `$MESH_TOOLS_DIR/bin`; `<repo>/.tools/bin`
//! for the checkout containing the current directory, then for the checkout
//! this binary was built from; then `PATH`.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{bail, Context as _};

/// The installer, relative to a checkout.
const INSTALLER: &str = "scripts/install-tools";

/// The checkout this binary was built from (it may have moved since).
const BUILT_FROM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Checkouts of the project: the one around the current directory, then the
/// one this binary was built from.
fn checkouts() -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(current) = std::env::current_dir() {
        if let Some(repo) = current
            .ancestors()
            .find(|dir| dir.join(INSTALLER).is_file())
        {
            found.push(repo.to_owned());
        }
    }
    let built_from = PathBuf::from(BUILT_FROM);
    if built_from.join(INSTALLER).is_file() {
        let built_from = built_from.canonicalize().unwrap_or(built_from);
        if !found.contains(&built_from) {
            found.push(built_from);
        }
    }
    found
}

/// Folders that may hold the project's tools, in search order.
fn tool_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(tools) = std::env::var_os("MESH_TOOLS_DIR").filter(|dir| !dir.is_empty()) {
        dirs.push(PathBuf::from(tools).join("bin"));
    }
    dirs.extend(checkouts().into_iter().map(|repo| repo.join(".tools/bin")));
    dirs
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Where `name` is: the project's tools folders first, then `PATH`.
pub(crate) fn find(name: &str) -> Option<PathBuf> {
    tool_dirs()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
        .or_else(|| on_path(name))
}

/// `name` as found on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
}

/// Runs `scripts/install-tools` (its progress goes to our stderr) and returns
/// the folder it installed into (its last line of output).
pub(crate) async fn install() -> anyhow::Result<PathBuf> {
    let Some(repo) = checkouts().into_iter().next() else {
        bail!(
            "cannot find {INSTALLER}: run `mesh up` from the project's checkout, \
             or put consul on PATH (or in $MESH_TOOLS_DIR/bin)"
        );
    };
    let installer = repo.join(INSTALLER);
    let output = tokio::process::Command::new(&installer)
        .current_dir(&repo)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("cannot run {}", installer.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({})",
            installer.display(),
            localenv::describe(output.status)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let bin = stdout
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .map(PathBuf::from)
        .with_context(|| format!("{} printed no tools folder", installer.display()))?;
    Ok(bin)
}

/// `consul`, installed with `scripts/install-tools` when it is nowhere
/// (saying so on stdout).
pub(crate) async fn consul() -> anyhow::Result<PathBuf> {
    if let Some(path) = find("consul") {
        return Ok(path);
    }
    crate::output::print_line(&format!(
        "consul: not found; installing it with {INSTALLER} (Consul's Debian package, into .tools/bin)…"
    ));
    let bin = install().await?;
    let path = bin.join("consul");
    if !is_executable(&path) {
        bail!("{INSTALLER} ran but {} is missing", path.display());
    }
    crate::output::print_line(&format!("consul: installed {}", path.display()));
    Ok(path)
}

/// How to invoke grpcurl in a command to paste: `grpcurl` when it is on
/// `PATH`, else its full path in the project's tools, else `grpcurl`.
pub(crate) fn grpcurl_command() -> String {
    if on_path("grpcurl").is_some() {
        return "grpcurl".to_owned();
    }
    find("grpcurl").map_or_else(|| "grpcurl".to_owned(), |path| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkout_this_binary_was_built_from_is_found() {
        let repos = checkouts();
        assert!(
            repos.iter().any(|repo| repo.join(INSTALLER).is_file()),
            "{repos:?}"
        );
    }
}
