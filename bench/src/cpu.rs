//! CPU time of a process from `/proc/<pid>/stat`: user and system time of
//! all its threads, so figures taken on a loaded machine still count only
//! the process's own work; and its context switches, from each thread's
//! `/proc/<pid>/task/<tid>/status`.

use std::time::Duration;

use anyhow::Context as _;

/// User + system CPU seconds `process` has used (`"self"` or a pid).
pub(crate) fn cpu_seconds(process: &str) -> anyhow::Result<f64> {
    Ok(cpu_times(process)?.total())
}

/// The CPU seconds `process` (`"self"` or a pid) has used, in user space
/// and in the kernel on its behalf.
pub(crate) fn cpu_times(process: &str) -> anyhow::Result<CpuTimes> {
    let path = format!("/proc/{process}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let (_, ticks) = parse_stat(&stat).with_context(|| format!("unexpected {path}"))?;
    let seconds = |ticks: u64| clock_tick().as_secs_f64() * ticks as f64;
    Ok(CpuTimes {
        user: seconds(ticks.user),
        system: seconds(ticks.system),
    })
}

/// A process's CPU seconds so far, split by where they were spent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CpuTimes {
    /// In the process's own code and libraries.
    pub(crate) user: f64,
    /// In the kernel on its behalf: system calls, and the wake-ups, thread
    /// switches and syncs they lead to.
    pub(crate) system: f64,
}

impl CpuTimes {
    /// User + system.
    pub(crate) fn total(self) -> f64 {
        self.user + self.system
    }
}

/// A `/proc/<pid>/stat`'s CPU time in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticks {
    /// utime.
    pub(crate) user: u64,
    /// stime.
    pub(crate) system: u64,
}

impl Ticks {
    /// utime + stime.
    pub(crate) fn total(self) -> u64 {
        self.user + self.system
    }
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

/// (process group, utime and stime in clock ticks) of a `/proc/<pid>/stat`
/// line (stat(5)); the command name may hold spaces and parentheses, so
/// fields are counted after its last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<(u32, Ticks)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) … utime(14) stime(15).
    let group = fields.get(2)?.parse().ok()?;
    let user = fields.get(11)?.parse().ok()?;
    let system = fields.get(12)?.parse().ok()?;
    Some((group, Ticks { user, system }))
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
        assert_eq!(
            parse_stat(line),
            Some((
                4200,
                Ticks {
                    user: 250,
                    system: 75
                }
            ))
        );
        assert_eq!(parse_stat(line).unwrap().1.total(), 325);
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
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(spin);
        let times = cpu_times("self").unwrap();
        assert!(times.user > 0.0, "{times:?}");
        assert!(times.system >= 0.0, "{times:?}");
        assert!(cpu_seconds("self").unwrap() >= times.total());
        assert!(cpu_seconds("0").is_err());
    }
}
