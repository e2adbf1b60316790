//! `mesh cert`: what it writes, and what files planted in its output folder
//! cannot do to the private key.

mod common;

use std::{
    fs,
    os::unix::fs::{symlink, PermissionsExt},
    path::Path,
};

use common::{mesh, stderr};
use testkit::ConsulAgent;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink())
}

/// `mesh cert operator --out <dir>` against `agent`.
fn cert(agent: &ConsulAgent, dir: &Path) -> std::process::Output {
    mesh(&[
        "cert",
        "operator",
        "--out",
        dir.to_str().expect("utf-8 path"),
        "--consul-addr",
        &agent.http_addr(),
    ])
}

/// Hardening finding 13: `mesh cert` wrote the private key through a fixed
/// temp name (`key.pem.tmp`), opened without `O_EXCL` and following
/// symlinks, then renamed it: a world-writable file planted there made the
/// key world-readable (observed `-rw-rw-rw- key.pem`), and a symlink there
/// wrote the key wherever it pointed (and left `key.pem` a link to it). Now
/// each file goes through a new randomly named temp file (create-new, no
/// symlink following, mode set on the open file before writing) and a
/// rename, and a symlink planted at a file's final name is refused.
#[test]
fn planted_files_cannot_expose_or_redirect_the_private_key() {
    let agent = ConsulAgent::start();
    let root = tempfile::tempdir().expect("temp dir");
    let attacker = tempfile::tempdir().expect("temp dir");
    let mut violations = Vec::new();

    // A world-writable file at the old temp name.
    let planted_file = root.path().join("planted-file");
    fs::create_dir(&planted_file).expect("mkdir");
    fs::write(planted_file.join("key.pem.tmp"), "planted").expect("plant");
    fs::set_permissions(
        planted_file.join("key.pem.tmp"),
        fs::Permissions::from_mode(0o666),
    )
    .expect("chmod");
    let output = cert(&agent, &planted_file);
    assert!(output.status.success(), "{}", stderr(&output));
    let key = planted_file.join("key.pem");
    if is_symlink(&key) || mode(&key) != 0o600 {
        violations.push(format!(
            "a planted key.pem.tmp left key.pem with mode {:o}",
            mode(&key)
        ));
    }
    if !fs::read_to_string(&key)
        .unwrap_or_default()
        .contains("PRIVATE KEY")
    {
        violations.push("key.pem holds no private key".to_owned());
    }

    // A symlink at the old temp name, into a folder the attacker reads.
    let planted_link = root.path().join("planted-link");
    fs::create_dir(&planted_link).expect("mkdir");
    let stolen = attacker.path().join("stolen.pem");
    fs::write(&stolen, "").expect("attacker's file");
    fs::set_permissions(&stolen, fs::Permissions::from_mode(0o666)).expect("chmod");
    symlink(&stolen, planted_link.join("key.pem.tmp")).expect("plant a symlink");
    let output = cert(&agent, &planted_link);
    assert!(output.status.success(), "{}", stderr(&output));
    if fs::read_to_string(&stolen)
        .unwrap_or_default()
        .contains("PRIVATE KEY")
    {
        violations.push(format!(
            "the key was written through a planted symlink into {}",
            stolen.display()
        ));
    }
    let key = planted_link.join("key.pem");
    if is_symlink(&key) {
        violations.push("key.pem is a symlink to the attacker's file".to_owned());
    } else if mode(&key) != 0o600 {
        violations.push(format!("key.pem has mode {:o}", mode(&key)));
    }

    // A symlink at the final name: refused, its target untouched.
    let linked_key = root.path().join("linked-key");
    fs::create_dir(&linked_key).expect("mkdir");
    let target = attacker.path().join("target.pem");
    fs::write(&target, "untouched").expect("target");
    symlink(&target, linked_key.join("key.pem")).expect("plant a symlink");
    let output = cert(&agent, &linked_key);
    let error = stderr(&output);
    if output.status.success() || !error.contains("symbolic link") {
        violations.push(format!(
            "a symlink at key.pem was not refused (exit {:?}): {error}",
            output.status.code()
        ));
    }
    if fs::read_to_string(&target).unwrap_or_default() != "untouched" {
        violations.push("the symlink's target was written".to_owned());
    }

    // Nothing is left behind in a clean folder: exactly the three files.
    let clean = root.path().join("clean");
    let output = cert(&agent, &clean);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut names: Vec<String> = fs::read_dir(&clean)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    if names != ["ca.pem", "cert.pem", "key.pem"] {
        violations.push(format!("mesh cert left {names:?}"));
    }
    for (name, expected) in [("ca.pem", 0o644), ("cert.pem", 0o644), ("key.pem", 0o600)] {
        let found = mode(&clean.join(name));
        if found != expected {
            violations.push(format!("{name} has mode {found:o}, not {expected:o}"));
        }
    }
    assert!(
        violations.is_empty(),
        "mesh cert's key files: {violations:#?}"
    );
}
