//! CPU time of the processes a round exercises, from `/proc` (user +
//! system time of every live process in a process group): a measure of the
//! outbox's cost that a loaded machine does not bend the way throughput
//! bends, since CPU seconds per order do not depend on who else runs.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

use crate::cpu::{clock_tick, parse_stat};

/// The process groups counted, by what they are. Every process the shop
/// starts leads its own group (`localenv` spawns them so), so a group is the
/// process and whatever it started (RabbitMQ's Erlang VM under its script).
#[derive(Debug, Clone)]
pub(crate) struct Groups(pub(crate) Vec<(&'static str, u32)>);

/// CPU time per group at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample(BTreeMap<&'static str, Duration>);

impl Groups {
    /// The CPU time each group has used so far.
    pub(crate) fn sample(&self) -> Sample {
        let tick = clock_tick();
        let mut totals: BTreeMap<&'static str, u64> =
            self.0.iter().map(|(name, _)| (*name, 0)).collect();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Sample::default();
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((group, ticks)) = parse_stat(&stat) else {
                continue;
            };
            for (label, leader) in &self.0 {
                if *leader == group {
                    *totals.entry(label).or_default() += ticks.total();
                }
            }
        }
        Sample(
            totals
                .into_iter()
                .map(|(label, ticks)| (label, tick * u32::try_from(ticks).unwrap_or(u32::MAX)))
                .collect(),
        )
    }
}

impl Sample {
    /// A sample of these groups' times.
    #[cfg(test)]
    pub(crate) fn of(used: impl IntoIterator<Item = (&'static str, Duration)>) -> Self {
        Sample(used.into_iter().collect())
    }

    /// What `label`'s group used (zero for a group not counted).
    pub(crate) fn used(&self, label: &str) -> Duration {
        self.0.get(label).copied().unwrap_or_default()
    }

    /// What each group used between `earlier` and this sample.
    pub(crate) fn since(&self, earlier: &Sample) -> Sample {
        Sample(
            self.0
                .iter()
                .map(|(label, now)| {
                    let before = earlier.0.get(label).copied().unwrap_or_default();
                    (*label, now.saturating_sub(before))
                })
                .collect(),
        )
    }

    /// Adds `other` to this one, group by group.
    pub(crate) fn add(&mut self, other: &Sample) {
        for (label, used) in &other.0 {
            *self.0.entry(label).or_default() += *used;
        }
    }

    /// CPU µs per order of each group, and of all of them together.
    pub(crate) fn per_order(&self, orders: u64) -> CpuPerOrder {
        let per = |used: Duration| used.as_secs_f64() * 1e6 / orders.max(1) as f64;
        CpuPerOrder {
            by_process: self
                .0
                .iter()
                .map(|(label, used)| (label.to_string(), per(*used)))
                .collect(),
            total_us: per(self.0.values().sum()),
        }
    }
}

/// CPU µs per order.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CpuPerOrder {
    /// By process (group).
    pub(crate) by_process: BTreeMap<String, f64>,
    /// All the counted processes together.
    pub(crate) total_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_time_its_group_is_charged_with() {
        let me = std::process::id();
        let group = std::fs::read_to_string(format!("/proc/{me}/stat"))
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .map(|(group, _)| group)
            .expect("this process's own stat");
        let groups = Groups(vec![("me", group)]);
        let before = groups.sample();
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(spin);
        let used = groups.sample().since(&before);
        let per = used.per_order(1);
        assert!(per.total_us > 0.0, "{per:?}");
        assert_eq!(per.by_process.len(), 1);
    }
}
