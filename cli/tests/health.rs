//! `mesh health`: exit 0 only while the server says SERVING (Docker compose
//! healthchecks depend on it).

mod common;

use std::time::{Duration, Instant};

use common::{mesh, stderr, stdout};
use testkit::{free_port, wait_until, ServiceOptions, ServiceProcess};

#[test]
fn health_exits_0_for_a_serving_instance_and_its_service() {
    let users = ServiceProcess::start("users", ServiceOptions::default());
    let output = mesh(&["health", &users.addr()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "SERVING");

    let output = mesh(&["health", &users.addr(), "--service", "mesh.users.v1.Users"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // A service this server does not have is not healthy.
    let output = mesh(&["health", &users.addr(), "--service", "mesh.nope.v1.Nope"]);
    assert_ne!(output.status.code(), Some(0), "{}", stdout(&output));
}

#[test]
fn health_fails_fast_on_a_closed_port() {
    let closed = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let output = mesh(&["health", &closed]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("cannot connect"),
        "{}",
        stderr(&output)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn health_fails_while_an_instance_drains() {
    let mut users = ServiceProcess::start(
        "users",
        ServiceOptions {
            drain: Some(Duration::from_secs(20)),
            ..ServiceOptions::default()
        },
    );
    users.child.terminate();
    let status = wait_until(
        "mesh health to report NOT_SERVING",
        Duration::from_secs(10),
        || {
            let output = mesh(&["health", &users.addr()]);
            (output.status.code() == Some(1)).then(|| stdout(&output))
        },
    );
    assert_eq!(status.trim(), "NOT_SERVING");
    // Still during the drain: the process runs and the port answers.
    assert!(
        users.child.is_running(),
        "the instance exited instead of draining"
    );
}
