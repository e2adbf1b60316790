//! Child processes: signalling them (nix's safe `kill`), stopping them
//! gracefully with a bounded wait, and describing how they ended.

use std::{os::unix::process::ExitStatusExt as _, process::ExitStatus, time::Duration};

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

/// SIGTERM, wait up to `grace`, then SIGKILL; always reaps. Returns how the
/// child ended and whether it had to be killed.
pub(crate) async fn stop(
    child: &mut Child,
    grace: Duration,
) -> (std::io::Result<ExitStatus>, bool) {
    signal(child, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => (status, false),
        Err(_) => (kill_and_reap(child).await, true),
    }
}

/// SIGKILL and reap.
pub(crate) async fn kill_and_reap(child: &mut Child) -> std::io::Result<ExitStatus> {
    signal(child, Signal::SIGKILL);
    child.wait().await
}

/// "exit code 1", "signal 9 (SIGKILL)".
pub(crate) fn describe(status: ExitStatus) -> String {
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

/// Whether a process with this id exists (a zombie counts: it is not reaped).
pub(crate) fn is_alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

/// The last `lines` lines of a log file.
pub(crate) fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_exit_codes_and_signals() {
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exit code 1");
        assert_eq!(describe(ExitStatus::from_raw(9)), "signal 9 (SIGKILL)");
    }
}
