//! CPU time of a process from `/proc/<pid>/stat`: user + system time of all
//! its threads, so figures taken on a loaded machine still count only the
//! process's own work.

use std::time::Duration;

use anyhow::Context as _;

/// User + system CPU seconds `process` has used (`"self"` or a pid).
pub(crate) fn cpu_seconds(process: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{process}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let (_, ticks) = parse_stat(&stat).with_context(|| format!("unexpected {path}"))?;
    Ok(clock_tick().as_secs_f64() * ticks as f64)
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
    fn this_process_has_used_some_cpu() {
        let spent = cpu_seconds("self").unwrap();
        assert!(spent >= 0.0);
        assert!(cpu_seconds("0").is_err());
    }
}
