//! Where the binaries under test and the project's tools are.

use std::path::PathBuf;

/// The path of a workspace binary (`users`, `orders`, `mesh`…) built in the
/// same profile as the running test. Panics with the command to run when it
/// has not been built.
pub fn binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// The project's tools folder (`scripts/install-tools` fills it;
/// `MESH_TOOLS_DIR` overrides the default `<repo>/.tools`).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("MESH_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools"))
}

/// The path of a tool (`consul`, `grpcurl`) installed by `scripts/install-tools`.
/// Panics when it is missing: tests never skip for a missing tool.
pub fn tool(name: &str) -> PathBuf {
    let path = tools_dir().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-tools (scripts/test does)",
        path.display()
    );
    path
}
