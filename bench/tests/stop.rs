//! `mesh-bench` stopped by a signal stops the services it started: they lead
//! process groups of their own (a terminal's Ctrl-C reaches only the bench),
//! so a bench that died without stopping them left them running, holding
//! their ports and databases.

use std::{
    collections::BTreeSet,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use testkit::binary;

/// The pids whose parent is `parent` (from /proc/<pid>/stat).
fn children_of(parent: u32) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The parent of `pid`, if it is running (a zombie counts as gone).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    (state != "Z").then_some(())?;
    fields.next()?.parse().ok()
}

/// Waits up to `limit` for `child` to exit; kills and reaps it otherwise.
fn exited_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn sigterm_stops_the_services_the_bench_started() {
    let mut bench = Command::new(binary("mesh-bench"))
        .args(["order-cost", "--rounds", "100", "--orders", "1000000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mesh-bench");
    // The shop order-cost starts: its four services.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut services = children_of(bench.id());
    while services.len() < 4 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        services = children_of(bench.id());
    }
    if services.len() < 4 {
        let _ = bench.kill();
        let _ = bench.wait();
        for pid in &services {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        panic!("mesh-bench started {services:?} within 60 s, not its four services");
    }

    let sent = Command::new("kill")
        .args(["-TERM", &bench.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM mesh-bench: {sent}");
    let status = exited_within(&mut bench, Duration::from_secs(20));
    let mut stderr = String::new();
    if let Some(mut pipe) = bench.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    let left: Vec<u32> = services
        .iter()
        .copied()
        .filter(|pid| parent_of(*pid).is_some())
        .collect();
    for pid in &left {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let status = status.expect("mesh-bench exits within 20 s of SIGTERM");
    assert!(
        !status.success(),
        "a stopped run is not a success: {status}"
    );
    assert!(
        left.is_empty(),
        "services left running after the bench stopped: {left:?}\n{stderr}"
    );
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
}
