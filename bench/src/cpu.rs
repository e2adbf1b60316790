//! CPU time of a process from `/proc/<pid>/stat`: user + system time of all
//! its threads, in USER_HZ (100 per second: the kernel's fixed unit for
//! `/proc`), so figures taken on a loaded machine still count only the
//! process's own work.

use anyhow::Context as _;

/// USER_HZ: `/proc`'s clock ticks per second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds `process` has used (`"self"` or a pid).
pub(crate) fn cpu_seconds(process: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{process}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_seconds(&stat).with_context(|| format!("unexpected {path}"))
}

/// utime + stime of a `stat(5)` line, in seconds.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The fields after the command name, which is in parentheses (and may
    // itself contain spaces or parentheses).
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); the state (field 3)
    // is index 0 here.
    let ticks = |index: usize| fields.get(index)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_summed_after_the_command_name() {
        let stat = "4242 (orders (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("4242 (orders) S 1"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spent = cpu_seconds("self").unwrap();
        assert!(spent >= 0.0);
        assert!(cpu_seconds("0").is_err());
    }
}
