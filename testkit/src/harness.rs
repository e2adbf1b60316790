//! A test binary's own `main` (`harness = false`) for tests that share an
//! expensive server — started once before the first case and stopped (and
//! reaped) after the last, which the standard harness cannot do: it never
//! drops statics.
//!
//! Prints what libtest prints (`test <name> ... ok`, then
//! `test result: ok. N passed; 0 failed; …`) and exits non-zero when a case
//! failed. Arguments that do not start with `-` filter cases by substring;
//! flags meant for libtest (`--test-threads=2`, …) are accepted and ignored:
//! cases run one after the other.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    process::ExitCode,
    time::Instant,
};

/// One named test case over a shared context.
pub struct Case<C: ?Sized> {
    /// The name printed and matched by filters.
    pub name: String,
    /// The test: panics on failure.
    pub run: Box<dyn Fn(&C)>,
}

impl<C: ?Sized> Case<C> {
    /// A case named `name`.
    pub fn new(name: impl Into<String>, run: impl Fn(&C) + 'static) -> Self {
        Self {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

impl<C: ?Sized> std::fmt::Debug for Case<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

/// The substring filters given on the command line.
pub fn filters() -> Vec<String> {
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--skip" || arg == "--test-threads" || arg == "--format" || arg == "--color" {
            args.next();
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    filters
}

/// Whether `name` passes `filters` (every case does when there are none).
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|filter| name.contains(filter.as_str()))
}

/// The tally of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases left out by the filters.
    pub filtered_out: usize,
}

impl Tally {
    /// Adds another group's tally.
    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.filtered_out += other.filtered_out;
    }

    /// Prints libtest's closing line and turns the tally into the exit code.
    pub fn finish(self, started: Instant) -> ExitCode {
        let verdict = if self.failed == 0 { "ok" } else { "FAILED" };
        println!(
            "\ntest result: {verdict}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
            self.passed,
            self.failed,
            self.filtered_out,
            started.elapsed().as_secs_f64()
        );
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(101)
        }
    }
}

/// Runs the selected `cases` over `context`, printing each outcome.
pub fn run<C: ?Sized>(context: &C, cases: &[Case<C>], filters: &[String]) -> Tally {
    let mut tally = Tally::default();
    for case in cases {
        if !selected(&case.name, filters) {
            tally.filtered_out += 1;
            continue;
        }
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| (case.run)(context)));
        match outcome {
            Ok(()) => {
                tally.passed += 1;
                println!(
                    "test {} ... ok ({:.1}s)",
                    case.name,
                    started.elapsed().as_secs_f64()
                );
            }
            Err(_) => {
                tally.failed += 1;
                println!("test {} ... FAILED", case.name);
            }
        }
    }
    tally
}
