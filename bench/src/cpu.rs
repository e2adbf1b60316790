//! CPU time of a process from `/proc/<pid>/stat`: user + system time of all
//! its threads, so figures taken on a loaded machine still count only the
//! process's own work; and its context switches, from each thread's
//! `/proc/<pid>/task/<tid>/status`.

use std::time::Duration;

use anyhow::Context as _;

/// User + system CPU seconds `process` has used (`"self"` or a pid).
pub(crate) fn cpu_seconds(process: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{process}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let (_, ticks) = parse_stat(&stat).with_context(|| format!("unexpected {path}"))?;
    Ok(clock_tick().as_secs_f64() * ticks as f64)
}

/// Context switches (voluntary + involuntary) of the live threads of
/// `process` (a pid): each is a wake-up or a preemption, the cost that
/// dominates a service's CPU when its work is hand-offs between threads. A
/// thread that has exited takes its count with it.
pub(crate) fn context_switches(process: &str) -> anyhow::Result<u64> {
    let tasks = format!("/proc/{process}/task");
    let mut total = 0;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
        let path = task?.path().join("status");
        // A thread may exit between the listing and the read.
        if let Ok(status) = std::fs::read_to_string(&path) {
            total += parse_switches(&status)
                .with_context(|| format!("no context switch counts in {}", path.display()))?;
        }
    }
    Ok(total)
}

/// `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` of a
/// `/proc/<pid>/task/<tid>/status` text (proc(5)).
pub(crate) fn parse_switches(status: &str) -> Option<u64> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    Some(field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?)
}

/// (process group, utime + stime in clock ticks) of a `/proc/<pid>/stat`
/// line (stat(5)); the command name may hold spaces and parentheses, so
/// fields are counted after its last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) … utime(14) stime(15).
    let group = fields.get(2)?.parse().ok()?;
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((group, user + system))
}

/// The length of a `/proc` clock tick (`getconf CLK_TCK`; Linux's
/// USER_HZ is 100 where that cannot be asked).
pub(crate) fn clock_tick() -> Duration {
    static TICK: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let hertz = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<u32>().ok())
            .filter(|hertz| *hertz > 0)
            .unwrap_or(100);
        Duration::from_secs(1) / hertz
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_group_and_cpu_ticks_whatever_the_name_holds() {
        let line = "4242 (beam.smp (x) y) S 1 4200 4200 0 -1 4194560 100 0 0 0 \
                    250 75 3 4 20 0 30 0 123 456 789";
        assert_eq!(parse_stat(line), Some((4200, 325)));
        assert_eq!(parse_stat("4242 (orders) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_status_text_gives_its_voluntary_and_involuntary_switches() {
        let status = "Name:\torders\nThreads:\t9\nvoluntary_ctxt_switches:\t1200\n\
                      nonvoluntary_ctxt_switches:\t34\n";
        assert_eq!(parse_switches(status), Some(1234));
        assert_eq!(parse_switches("voluntary_ctxt_switches:\t5\n"), None);
        assert_eq!(parse_switches("garbage"), None);
    }

    #[test]
    fn this_process_has_switched_at_least_once() {
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(context_switches("self").unwrap() >= 1);
        assert!(context_switches("0").is_err());
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spent = cpu_seconds("self").unwrap();
        assert!(spent >= 0.0);
        assert!(cpu_seconds("0").is_err());
    }
}
