//! A supervised server process: started with its output appended to a log
//! file and in its own process group (a terminal's Ctrl-C reaches only the
//! supervisor, which stops things in order), waited for with a [`Probe`],
//! stopped with SIGTERM, a grace period and SIGKILL, and always reaped — also
//! when the handle is dropped on an error path.

use std::{
    ffi::OsString,
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};

use crate::{probe::Cancel, Error, Probe};

/// How often a waiting loop looks again.
const POLL: Duration = Duration::from_millis(50);
/// How much of a log an error quotes.
const TAIL_LINES: usize = 15;
/// The most of a log read for its tail.
const TAIL_BYTES: u64 = 16 * 1024;

/// How to start one server process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// A short name for messages (`consul`, `redis`…).
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables added to (or replacing in) its environment.
    pub env: Vec<(OsString, OsString)>,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<OsString>,
    /// Its working directory (default: ours).
    pub current_dir: Option<PathBuf>,
    /// Where its stdout and stderr are appended.
    pub log: PathBuf,
    /// The user and group it runs as (default: ours), e.g. a broker that
    /// refuses to run as root.
    pub run_as: Option<RunAs>,
}

/// A user and group id to run a process as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

impl ProcessSpec {
    /// `program` with no arguments, logging to `log`.
    pub fn new(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        log: impl Into<PathBuf>,
    ) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            current_dir: None,
            log: log.into(),
            run_as: None,
        }
    }

    /// Adds arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// How a process ended when it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// Whether it had to be SIGKILLed after the grace period.
    pub killed: bool,
}

/// A running (or exited, not yet dropped) server process.
#[derive(Debug)]
pub struct Supervised {
    spec: ProcessSpec,
    child: Child,
    exit: Option<ExitStatus>,
}

impl Supervised {
    /// Starts the process. Returns at once: [`Supervised::wait_ready`] waits
    /// for it to serve.
    pub fn spawn(spec: ProcessSpec) -> Result<Self, Error> {
        if let Some(folder) = spec.log.parent() {
            std::fs::create_dir_all(folder).map_err(|e| Error::io("cannot create", folder, e))?;
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| Error::io("cannot open", &spec.log, e))?;
        let stderr = log
            .try_clone()
            .map_err(|e| Error::io("cannot open", &spec.log, e))?;
        let mut command = Command::new(&spec.program);
        command.args(&spec.args);
        for name in &spec.env_remove {
            command.env_remove(name);
        }
        command.envs(spec.env.iter().map(|(name, value)| (name, value)));
        if let Some(dir) = &spec.current_dir {
            command.current_dir(dir);
        }
        if let Some(user) = spec.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Its own process group: a Ctrl-C in the terminal reaches the
            // supervisor only, which stops its children in order.
            .process_group(0);
        let child = command.spawn().map_err(|source| Error::Spawn {
            name: spec.name.clone(),
            program: spec.program.clone(),
            source,
        })?;
        Ok(Self {
            spec,
            child,
            exit: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// How it was started.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.spec.log, TAIL_LINES)
    }

    /// Its exit status, once it has exited (reaped).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Asks `probe` until it says ready; fails with the end of the log if the
    /// process exits first, after `timeout` with the probe's last answer, or
    /// at once when `cancel` is set.
    pub fn wait_ready(
        &mut self,
        probe: &mut dyn Probe,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(Error::Exited {
                    name: self.spec.name.clone(),
                    status: describe(status),
                    log: self.spec.log.clone(),
                    tail: self.log_tail(),
                });
            }
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let last = match probe.check() {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    name: self.spec.name.clone(),
                    timeout,
                    last,
                    log: self.spec.log.clone(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, up to `grace` for it to exit, then SIGKILL; reaps it.
    pub fn stop(&mut self, grace: Duration) -> Result<Stopped, Error> {
        if let Some(status) = self.try_exit() {
            return Ok(Stopped {
                status,
                killed: false,
            });
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                return Ok(Stopped {
                    status,
                    killed: false,
                });
            }
            std::thread::sleep(POLL);
        }
        Ok(Stopped {
            status: self.kill()?,
            killed: true,
        })
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        if let Some(status) = self.try_exit() {
            return Ok(status);
        }
        self.signal(Signal::SIGKILL);
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io("cannot reap the process of", &self.spec.program, e))?;
        self.exit = Some(status);
        Ok(status)
    }

    /// Sends `signal` to its process group (it leads one: a wrapper script
    /// and what it started get it too) unless it has exited and been reaped,
    /// after which its pid may belong to someone else.
    pub fn signal(&mut self, signal: Signal) {
        if self.try_exit().is_none() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = killpg(Pid::from_raw(pid), signal);
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Nothing this engine starts outlives its handle.
        let _ = self.kill();
    }
}

/// How a process ended: `exit code 1`, `signal 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => format!("signal {number} ({})", signal.as_str()),
            Err(_) => format!("signal {number}"),
        },
        None => status.to_string(),
    }
}

/// The last `lines` lines of the file at `path` (at most its last 16 KiB);
/// empty if it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::kill;

    use super::*;

    struct Never;

    impl Probe for Never {
        fn check(&mut self) -> Result<(), String> {
            Err("never ready".to_owned())
        }
    }

    fn sh(dir: &Path, script: &str) -> ProcessSpec {
        ProcessSpec::new("sh", "/bin/sh", dir.join("sh.log")).args(["-c", script])
    }

    #[test]
    fn a_process_that_exits_early_fails_the_wait_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut process =
            Supervised::spawn(sh(dir.path(), "echo broken config >&2; exit 3")).unwrap();
        let error = process
            .wait_ready(&mut Never, Duration::from_secs(10), &Cancel::default())
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("exit code 3") && text.contains("broken config"),
            "{text}"
        );
    }

    #[test]
    fn a_slow_process_times_out_with_the_probes_answer_and_is_killed_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        // Ignores SIGTERM: the stop must end in SIGKILL.
        let mut process = Supervised::spawn(sh(dir.path(), "trap '' TERM; sleep 30")).unwrap();
        let error = process
            .wait_ready(&mut Never, Duration::from_millis(200), &Cancel::default())
            .unwrap_err();
        assert!(error.to_string().contains("never ready"), "{error}");
        let pid = process.pid();
        let stopped = process.stop(Duration::from_millis(300)).unwrap();
        assert!(stopped.killed);
        // Reaped: the pid is gone, not a zombie.
        assert!(kill(Pid::from_raw(pid as i32), None).is_err());
    }

    #[test]
    fn cancel_ends_the_wait_and_drop_reaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = Supervised::spawn(sh(dir.path(), "sleep 30")).unwrap();
        let cancel = Cancel::default();
        cancel.cancel();
        let error = process
            .wait_ready(&mut Never, Duration::from_secs(10), &cancel)
            .unwrap_err();
        assert!(matches!(error, Error::Cancelled), "{error}");
        let pid = process.pid();
        drop(process);
        assert!(kill(Pid::from_raw(pid as i32), None).is_err());
    }

    #[test]
    fn a_graceful_stop_is_not_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = Supervised::spawn(sh(
            dir.path(),
            "trap 'exit 0' TERM; while :; do sleep 0.05; done",
        ))
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let stopped = process.stop(Duration::from_secs(10)).unwrap();
        assert!(!stopped.killed);
        assert!(stopped.status.success());
    }

    #[test]
    fn describes_exit_codes_and_signals() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exit code 1");
        assert_eq!(describe(ExitStatus::from_raw(9)), "signal 9 (SIGKILL)");
    }

    #[test]
    fn the_tail_is_the_end_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (1..=100).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(log_tail(&path, 2), "line 99\nline 100");
        assert_eq!(log_tail(&dir.path().join("none"), 2), "");
    }
}
