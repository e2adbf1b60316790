//! What every mesh service must do, as a person sees it with grpcurl:
//! list itself beside health and reflection, and drain on SIGTERM
//! (NOT_SERVING for `""` and its full name, then exit 0). Each service's
//! tests call these with its own names.

use std::time::{Duration, Instant};

use crate::{grpcurl::grpcurl, service::ServiceOptions, service::ServiceProcess, wait::wait_until};

/// `grpcurl list` shows `grpc_service`, gRPC health and reflection (v1alpha,
/// the version grpcurl 1.8 asks for).
pub fn assert_lists_service_health_and_reflection(process: &ServiceProcess, grpc_service: &str) {
    let output = grpcurl(&[&process.addr(), "list"]);
    assert!(output.success, "{output:?}");
    let services: Vec<&str> = output.stdout.lines().collect();
    for expected in [
        grpc_service,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.contains(&expected),
            "{expected} missing from {services:?}"
        );
    }
}

/// Starts `name` with a 1.5 s drain, sends SIGTERM, and checks that health
/// turns NOT_SERVING (for `""` and `grpc_service`) while it drains, and that
/// the process then exits 0.
pub fn assert_drains_on_sigterm(name: &str, grpc_service: &str, options: ServiceOptions) {
    let drain = Duration::from_millis(1500);
    let mut process = ServiceProcess::start(
        name,
        ServiceOptions {
            drain_ms: Some(drain.as_millis() as u64),
            ..options
        },
    );
    assert_eq!(process.health(grpc_service), "SERVING");
    let terminated = Instant::now();
    process.child.terminate();
    wait_until(
        "NOT_SERVING during the drain",
        drain - Duration::from_millis(100),
        || (process.health("") == "NOT_SERVING").then_some(()),
    );
    assert_eq!(process.health(grpc_service), "NOT_SERVING");
    assert!(
        terminated.elapsed() < drain,
        "still draining when NOT_SERVING was seen"
    );
    let status = process
        .child
        .wait(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{name} did not exit after draining"));
    assert!(status.success(), "{name} exited with {status:?}");
}
