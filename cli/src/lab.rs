//! `mesh bench …`, `mesh bench-discovery …` and `mesh bench-routing …`: the
//! spellings of the benchmark lab from before it became its own binary, kept
//! (hidden) so that documented commands still work. Each runs `mesh-bench
//! load …`, `mesh-bench discovery …` or `mesh-bench routing …` in place of
//! this process (the same arguments, environment and exit code), from this
//! executable's folder, where cargo builds it.

use std::{
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, ExitCode},
};

use anyhow::Context as _;

/// The lab's binary (package `mesh-bench`, folder `bench/`).
const LAB: &str = "mesh-bench";

/// Everything after `mesh bench` or `mesh bench-discovery`, handed over as is.
#[derive(clap::Args, Debug)]
pub(crate) struct LabArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

/// Which of the lab's commands an alias stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabCommand {
    /// `mesh bench` → `mesh-bench load`.
    Load,
    /// `mesh bench-discovery` → `mesh-bench discovery`.
    Discovery,
    /// `mesh bench-routing` → `mesh-bench routing`.
    Routing,
}

impl LabCommand {
    fn subcommand(self) -> &'static str {
        match self {
            LabCommand::Load => "load",
            LabCommand::Discovery => "discovery",
            LabCommand::Routing => "routing",
        }
    }
}

/// Replaces this process with `mesh-bench <command> <args>`; returns only
/// when that cannot be done, after saying why.
pub(crate) fn exec(command: LabCommand, args: LabArgs) -> ExitCode {
    let error = match lab_binary() {
        Ok(program) => {
            let error = Command::new(&program)
                .arg(command.subcommand())
                .args(args.args)
                .exec();
            anyhow::Error::new(error).context(format!("cannot run {}", program.display()))
        }
        Err(error) => error,
    };
    eprintln!("mesh: {error:#}");
    ExitCode::FAILURE
}

/// `mesh-bench` beside this executable.
fn lab_binary() -> anyhow::Result<PathBuf> {
    let current = std::env::current_exe().context("cannot find this executable")?;
    let folder = current.parent().context("this executable has no folder")?;
    let program = folder.join(LAB);
    anyhow::ensure!(
        program.is_file(),
        "the benchmark lab is its own binary now, and {} is not built: run \
         `cargo build --release -p mesh-bench` (or `cargo run --release --bin mesh-bench -- …`)",
        program.display()
    );
    Ok(program)
}
