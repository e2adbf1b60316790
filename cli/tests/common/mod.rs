//! What the CLI's tests share: running `mesh`, reading what it printed,
//! checking processes. Processes and waits come from testkit.
#![allow(dead_code)] // each test file uses a part

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use nix::{sys::signal::kill, unistd::Pid};
use testkit::{binary, output_within, ChildGuard};

/// Every service `mesh up` runs, by name (the CLI's own list).
pub fn services() -> Vec<&'static str> {
    mesh_cli::services::names()
}

/// `mesh <args>` with `env` added, to completion (bounded).
pub fn mesh_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary("mesh"));
    command.args(args);
    // A test's `mesh` sees only the Consul variables it sets.
    for variable in discovery::CONSUL_ENVIRONMENT {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied());
    output_within(command, Duration::from_secs(90))
}

/// `mesh <args>` to completion (bounded).
pub fn mesh(args: &[&str]) -> Output {
    mesh_env(args, &[])
}

/// `mesh <args>` run in `dir` with no Consul variable at all, as an operator
/// types it in the checkout after `mesh up` (bounded).
pub fn mesh_in(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(binary("mesh"));
    command.args(args).current_dir(dir);
    for variable in discovery::CONSUL_ENVIRONMENT {
        command.env_remove(variable);
    }
    output_within(command, Duration::from_secs(90))
}

/// Runs every grpcurl command `mesh up` printed, as a shell would (in
/// `dir`); each succeeds except the lookup of a payment that does not exist
/// (NotFound). Returns how many ran.
pub fn run_printed_grpcurl_commands(log: &str, dir: &Path) -> usize {
    let commands: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|line| line.contains("grpcurl") && line.contains(" -cacert "))
        .collect();
    assert!(
        commands.len() >= 8,
        "too few grpcurl commands printed:\n{log}"
    );
    for command in &commands {
        let output = Command::new("sh")
            .args(["-c", command])
            .current_dir(dir)
            .output()
            .expect("run sh");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if command.contains("no-such-payment") {
            assert!(stderr.contains("NotFound"), "{command}: {stderr}");
        } else {
            assert!(output.status.success(), "{command}: {stderr}");
        }
    }
    commands.len()
}

/// Runs the front door's printed commands (from `The front door:` to the
/// `(without a token` line) as one shell script in `dir`, as a person pasting
/// them would; they must all succeed. Returns what they printed.
pub fn run_printed_curl_commands(log: &str, dir: &Path) -> String {
    let script: Vec<&str> = log
        .lines()
        .skip_while(|line| !line.starts_with("The front door:"))
        .take_while(|line| !line.trim_start().starts_with("(without a token"))
        .filter(|line| line.starts_with("  "))
        .map(str::trim)
        .collect();
    assert!(
        script
            .iter()
            .filter(|line| line.starts_with("curl "))
            .count()
            >= 4,
        "too few curl commands printed:\n{log}"
    );
    let script = format!("set -e\n{}\n", script.join("\n"));
    let output = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir)
        .output()
        .expect("run sh");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script}\n{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whether a process with this pid exists (an unreaped zombie counts).
pub fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// `<state-dir>/pids` as written by `mesh up`.
pub fn pids(state_dir: &Path) -> BTreeMap<String, u32> {
    std::fs::read_to_string(state_dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (name, pid) = line.split_once(' ')?;
            Some((name.to_owned(), pid.trim().parse().ok()?))
        })
        .collect()
}

/// A `mesh up` in the background. Dropped while it runs (a failing test), it
/// is asked to stop (SIGINT) and, should that not work, it and the processes
/// its pid file lists are SIGKILLed, so a failed test leaves nothing behind.
pub struct Up {
    /// The `mesh up` process.
    pub child: ChildGuard,
    state_dir: std::path::PathBuf,
}

impl Up {
    /// Its output so far.
    pub fn log(&self) -> String {
        self.child.log()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if !self.child.is_running() {
            return;
        }
        let listed = pids(&self.state_dir);
        self.child.signal(nix::sys::signal::Signal::SIGINT);
        if self.child.wait(Duration::from_secs(20)).is_none() {
            self.child.kill();
        }
        for (name, pid) in listed {
            let ours = match name.as_str() {
                "up" => false,
                "consul" => cmdline(pid).iter().any(|arg| arg == "agent"),
                _ => cmdline(pid).iter().any(|arg| arg == "serve"),
            };
            if ours {
                let _ = kill(Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// A process's arguments.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|byte| *byte == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Starts `mesh up <args>` in the background (output to a fresh
/// `<state-dir>/up-<n>.log`, so that each run's output stands alone).
pub fn spawn_up(state_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Up {
    let mut command = Command::new(binary("mesh"));
    command
        .arg("up")
        .arg("--state-dir")
        .arg(state_dir)
        .args(args);
    // A test's `mesh` sees only the Consul variables it sets.
    for variable in discovery::CONSUL_ENVIRONMENT {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied());
    std::fs::create_dir_all(state_dir).expect("state dir");
    Up {
        child: ChildGuard::spawn("mesh up", command, &fresh_log(state_dir)),
        state_dir: state_dir.to_owned(),
    }
}

/// Waits until `mesh up` prints `text`; panics with its output if it exits first.
pub fn wait_for_output(up: &mut Up, text: &str, timeout: Duration) {
    testkit::wait_until(&format!("`mesh up` to print {text:?}"), timeout, || {
        if up.child.log().contains(text) {
            return Some(());
        }
        assert!(
            up.child.is_running(),
            "`mesh up` exited early:\n{}",
            up.child.log()
        );
        None
    });
}

/// `<dir>/up-<n>.log` for the first `n` not taken.
fn fresh_log(dir: &Path) -> std::path::PathBuf {
    (1..)
        .map(|n| dir.join(format!("up-{n}.log")))
        .find(|path| !path.exists())
        .expect("a free log name")
}
