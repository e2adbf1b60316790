//! A real, throw-away PostgreSQL server on a free loopback port.

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use nix::unistd::{chown, Uid, User};

use crate::{ports::free_port, process::ChildGuard, wait::wait_until};

/// A PostgreSQL server in a temp dir. Dropping it kills and reaps it.
#[derive(Debug)]
pub struct Postgres {
    _child: ChildGuard,
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    run_as: Option<User>,
}

impl Postgres {
    /// Initialises a cluster (trust auth for the `mesh` role) and starts it.
    /// As root, runs as the `postgres` user (PostgreSQL refuses root).
    pub fn start() -> Self {
        let bin = server_bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let run_as = Uid::effective().is_root().then(|| {
            User::from_name("postgres").ok().flatten().expect(
                "running as root needs the `postgres` user (scripts/install-postgres installs it)",
            )
        });
        if let Some(user) = &run_as {
            chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown the data dir");
        }
        let data = dir.path().join("data");
        let output = Self::command(&run_as, bin.join("initdb"))
            .args([
                "-U",
                "mesh",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert_success("initdb", &output);
        let port = free_port();
        let mut command = Self::command(&run_as, bin.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(dir.path())
            .args(["-c", "fsync=off", "-c", "max_connections=200"]);
        let child = ChildGuard::spawn("postgres", command, &dir.path().join("postgres.log"));
        let server = Self {
            _child: child,
            port,
            bin,
            dir,
            run_as,
        };
        wait_until(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || {
                server
                    .psql("postgres", "SELECT 1")
                    .status
                    .success()
                    .then_some(())
            },
        );
        server
    }

    fn command(run_as: &Option<User>, program: PathBuf) -> Command {
        let mut command = Command::new(program);
        if let Some(user) = run_as {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        command
    }

    /// Runs one SQL statement with psql against `database`.
    pub fn psql(&self, database: &str, sql: &str) -> Output {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "mesh",
                "-d",
                database,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("run psql")
    }

    /// Creates `database` and returns its URL.
    pub fn create_database(&self, database: &str) -> String {
        assert_success(
            "CREATE DATABASE",
            &self.psql("postgres", &format!("CREATE DATABASE \"{database}\"")),
        );
        self.url(database)
    }

    /// `postgres://mesh@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://mesh@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's data folder (for logs).
    pub fn dir(&self) -> &std::path::Path {
        let _ = &self.run_as;
        self.dir.path()
    }
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The folder with `initdb` and `postgres` (`MESH_PG_BIN`, else Debian's
/// newest `/usr/lib/postgresql/*/bin`). Panics if there is none: run
/// `scripts/install-postgres` (scripts/test does).
fn server_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MESH_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort_by_key(|path| {
        path.parent()
            .and_then(|version| version.file_name())
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates
        .into_iter()
        .rev()
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        .expect("no PostgreSQL server found: run scripts/install-postgres (scripts/test does)")
}
