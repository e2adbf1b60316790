//! The benchmark lab's old spellings: `mesh bench …`, `mesh bench-discovery
//! …` and `mesh bench-routing …` run `mesh-bench load …`, `discovery …` and
//! `routing …` (the same arguments, output and exit code), and say how to
//! build the lab when it is missing.

mod common;

use std::{process::Command, time::Duration};

use common::{mesh, stderr, stdout};
use testkit::{binary, output_within, ServiceOptions, ServiceProcess};

#[test]
fn mesh_bench_runs_the_lab_with_the_documented_flags() {
    let inventory = ServiceProcess::start("inventory", ServiceOptions::default());
    let address = inventory.addr();
    // The spelling of the README before the lab moved out: `--via direct ADDR`.
    let output = mesh(&[
        "bench",
        "--mtls",
        "off",
        "--rpc",
        "health",
        "--requests",
        "20",
        "--via",
        "direct",
        &address,
        "--json",
    ]);
    let report = testkit::json_report(&output);
    assert_eq!(report["via"], "direct", "{report}");
    assert_eq!(report["ok"], 20, "{report}");

    // A refusal of the lab's own flags comes back with its exit code.
    let refused = mesh(&["bench", "--rpc", "no-such-rpc"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("no-such-rpc"),
        "{}",
        stderr(&refused)
    );
    let help = mesh(&["bench-discovery", "--help"]);
    assert!(help.status.success(), "{}", stderr(&help));
    assert!(stdout(&help).contains("--endpoints"), "{}", stdout(&help));
    let help = mesh(&["bench-routing", "--help"]);
    assert!(help.status.success(), "{}", stderr(&help));
    assert!(stdout(&help).contains("--shifts"), "{}", stdout(&help));
}

#[test]
fn without_the_lab_built_mesh_bench_says_how_to_build_it() {
    // `mesh` in a folder without `mesh-bench` beside it: a hard link, not a
    // copy (a copy's write descriptor, inherited by a process another test
    // forks meanwhile, makes running it fail with "text file busy").
    let built = binary("mesh");
    let folder = tempfile::tempdir_in(built.parent().expect("the build folder")).expect("temp dir");
    let alone = folder.path().join("mesh");
    std::fs::hard_link(&built, &alone).expect("link mesh");
    let mut command = Command::new(&alone);
    command.args(["bench", "--rpc", "health"]);
    let output = output_within(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let said = stderr(&output);
    assert!(
        said.contains("mesh-bench") && said.contains("cargo build --release -p mesh-bench"),
        "{said}"
    );
    // And the operator's help does not list the lab.
    let help = mesh(&["--help"]);
    assert!(!stdout(&help).contains("bench"), "{}", stdout(&help));
}
