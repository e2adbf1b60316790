//! The lab's quiet-machine rule: a benchmark on a busy machine measures the
//! other work too. `mesh-bench quiet` refuses (exit 1) when the 1-minute
//! load average is above `--max-load` (1 by default) unless `--busy-ok`
//! says to run anyway — `scripts/bench` asks it before it starts and keeps
//! its answer in the report, giving the load up to `--settle` to fall after
//! its own build (a release build leaves a 1-minute load of 2–4 behind on
//! an otherwise idle machine, which decays by e in a minute) — and every
//! `mesh-bench load` report carries the load average its run started at and
//! whether that was above the limit.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

/// The limit and where the load is read.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LoadLimit {
    /// A 1-minute load average above this makes the machine busy.
    #[arg(long, value_name = "LOAD", default_value_t = 1.0, value_parser = parse_load)]
    max_load: f64,

    /// Where the load average is read (Linux: /proc/loadavg).
    #[arg(long, hide = true, default_value = "/proc/loadavg")]
    loadavg_file: PathBuf,
}

/// The machine's load as a report states it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct MachineLoad {
    /// The 1-minute load average when the run started.
    pub(crate) load_average_1m: f64,
    /// The limit.
    pub(crate) max_load: f64,
    /// Whether the load average was above the limit.
    pub(crate) busy: bool,
}

impl LoadLimit {
    /// The machine's load now.
    pub(crate) fn measure(&self) -> anyhow::Result<MachineLoad> {
        let load = read_load(&self.loadavg_file)?;
        Ok(MachineLoad {
            load_average_1m: load,
            max_load: self.max_load,
            busy: load > self.max_load,
        })
    }
}

/// `mesh-bench quiet` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct QuietArgs {
    #[command(flatten)]
    limit: LoadLimit,

    /// Answer yes even when the machine is busy (the answer says so:
    /// `busy_ok`).
    #[arg(long)]
    busy_ok: bool,

    /// While the machine is busy, wait up to this long for its load to fall
    /// (looking every 5 s) before answering; without it, answers at once.
    #[arg(long, value_parser = parse_settle)]
    settle: Option<Duration>,
}

/// How often a settling wait looks at the load again.
const SETTLE_STEP: Duration = Duration::from_secs(5);

/// `mesh-bench quiet`'s answer (one JSON line on stdout).
#[derive(Debug, Serialize)]
struct QuietAnswer {
    #[serde(flatten)]
    load: MachineLoad,
    busy_ok: bool,
    /// How long it waited for the load to fall, in seconds.
    settled_s: u64,
}

/// Prints the machine's load (after waiting up to `--settle` for a busy
/// machine to quiet down); an error when it is busy without `--busy-ok`.
pub(crate) async fn quiet(args: QuietArgs) -> anyhow::Result<std::process::ExitCode> {
    let started = Instant::now();
    let settle = args.settle.unwrap_or_default();
    let mut load = args.limit.measure()?;
    if load.busy && !settle.is_zero() {
        eprintln!(
            "mesh-bench: 1-minute load average {:.2} is above {}; waiting up to {:?} for it to fall",
            load.load_average_1m, load.max_load, settle
        );
    }
    while load.busy && started.elapsed() + SETTLE_STEP <= settle {
        tokio::time::sleep(SETTLE_STEP).await;
        load = args.limit.measure()?;
    }
    if load.busy && !args.busy_ok {
        anyhow::bail!(
            "the machine is busy: 1-minute load average {:.2} is above {} (--max-load); numbers \
             taken now would measure the other work too. Wait for a quiet machine, or pass \
             --busy-ok to run anyway (the report then says so)",
            load.load_average_1m,
            load.max_load
        );
    }
    let answer = QuietAnswer {
        load,
        busy_ok: args.busy_ok,
        settled_s: started.elapsed().as_secs(),
    };
    crate::print_report(&answer, true, |_| String::new())?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The first field of a `/proc/loadavg`-style file.
fn read_load(path: &Path) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the load average from {}", path.display()))?;
    let first = text.split_whitespace().next().unwrap_or_default();
    first
        .parse::<f64>()
        .ok()
        .filter(|load| load.is_finite() && *load >= 0.0)
        .with_context(|| {
            format!(
                "{} does not start with a load average: {:?}",
                path.display(),
                text.chars().take(40).collect::<String>()
            )
        })
}

/// `--settle`: `90s`, `3m`, a bare number of seconds.
fn parse_settle(text: &str) -> Result<Duration, String> {
    mesh::config::duration::parser(
        mesh::config::duration::BareUnit::Seconds,
        Duration::from_secs(1),
    )(text)
}

fn parse_load(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(load) if load.is_finite() && load >= 0.0 => Ok(load),
        _ => Err(format!(
            "{text:?} is not a load average (a number ≥ 0, e.g. 1 or 0.5)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(file: &tempfile::NamedTempFile, max_load: f64) -> LoadLimit {
        LoadLimit {
            max_load,
            loadavg_file: file.path().to_owned(),
        }
    }

    fn loadavg(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn above_the_limit_is_busy() {
        let quiet = loadavg("0.40 0.80 1.20 2/300 4242\n");
        let load = limit(&quiet, 1.0).measure().unwrap();
        assert_eq!((load.load_average_1m, load.busy), (0.4, false));
        let busy = loadavg("3.25 2.00 1.00 5/300 4242\n");
        let load = limit(&busy, 1.0).measure().unwrap();
        assert_eq!((load.load_average_1m, load.busy), (3.25, true));
        assert!(!limit(&busy, 4.0).measure().unwrap().busy);
    }

    #[test]
    fn an_unreadable_load_or_limit_is_a_clear_error() {
        let garbage = loadavg("not a number\n");
        let text = format!("{:#}", limit(&garbage, 1.0).measure().unwrap_err());
        assert!(
            text.contains("does not start with a load average"),
            "{text}"
        );
        assert!(parse_load("-1").is_err());
        assert!(parse_load("NaN").is_err());
        assert_eq!(parse_load("0.5"), Ok(0.5));
    }
}
