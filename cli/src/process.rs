//! Child processes of `mesh up` (tokio's): signalling them (nix's safe
//! `kill`) and reaping them. How they ended is described by
//! `localenv::describe`, as for every process the engine runs.

use std::process::ExitStatus;

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use tokio::process::Child;

/// Sends `signal` to `child` unless it has already been reaped.
pub(crate) fn signal(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // ESRCH (already gone, not yet reaped) is fine: wait() will collect it.
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// SIGKILL and reap.
pub(crate) async fn kill_and_reap(child: &mut Child) -> std::io::Result<ExitStatus> {
    signal(child, Signal::SIGKILL);
    child.wait().await
}

/// Whether a process with this id exists (a zombie counts: it is not reaped).
pub(crate) fn is_alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

/// Whether `pid` runs a command line with the argument `argument` (so a
/// recycled pid is not mistaken for ours: `serve`, `up`, a Consul `agent`).
pub(crate) fn runs_with_argument(pid: u32, argument: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|byte| *byte == 0)
            .any(|arg| arg == argument.as_bytes())
    })
}
