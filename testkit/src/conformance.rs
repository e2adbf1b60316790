//! What every mesh service must do, as a person sees it with grpcurl:
//! list only itself beside health and reflection, describe its RPCs, and
//! drain on SIGTERM (NOT_SERVING for `""` and its full name, then exit 0).
//! Each service's tests call these with its own names.

use std::time::{Duration, Instant};

use crate::{
    grpcurl::grpcurl, reflection::list_services_v1, service::ServiceOptions,
    service::ServiceProcess, wait::wait_until,
};

/// What every server lists: its own service, gRPC health and both
/// reflection versions (sorted, as grpcurl prints them).
fn expected_list(grpc_service: &str) -> Vec<String> {
    let mut expected: Vec<String> = [
        grpc_service,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .map(str::to_owned)
    .into();
    expected.sort();
    expected
}

/// `grpcurl list` (reflection v1alpha, the version grpcurl 1.8 asks for) and
/// reflection v1 show exactly `grpc_service`, gRPC health and reflection —
/// no other service of the mesh — while `describe` still resolves the types
/// a person meets: health's messages and the google.rpc error details.
pub fn assert_lists_service_health_and_reflection(process: &ServiceProcess, grpc_service: &str) {
    let expected = expected_list(grpc_service);
    let output = grpcurl(&[&process.addr(), "list"]);
    assert!(output.success, "{output:?}");
    let listed: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(listed, expected, "grpcurl list (reflection v1alpha)");

    let mut listed_v1 = list_services_v1(&process.addr());
    listed_v1.sort();
    assert_eq!(listed_v1, expected, "reflection v1");

    for symbol in [
        "google.rpc.BadRequest",
        "google.rpc.ErrorInfo",
        "grpc.health.v1.HealthCheckResponse",
    ] {
        let output = grpcurl(&[&process.addr(), "describe", symbol]);
        assert!(output.success, "describe {symbol}: {output:?}");
        assert!(
            output.stdout.contains(&format!("{symbol} is a message")),
            "describe {symbol}: {}",
            output.stdout
        );
    }
}

/// `grpcurl describe <grpc_service>` succeeds and its text contains each of
/// `rpcs` (whole lines such as `rpc GetUser ( .mesh.users.v1.GetUserRequest )
/// returns ( .mesh.users.v1.User )`, or just their start, `rpc GetUser`).
#[track_caller]
pub fn assert_describes(process: &ServiceProcess, grpc_service: &str, rpcs: &[&str]) {
    let output = grpcurl(&[&process.addr(), "describe", grpc_service]);
    assert!(output.success, "describe {grpc_service}: {output:?}");
    for rpc in rpcs {
        assert!(
            output.stdout.contains(rpc),
            "{rpc} missing from:\n{}",
            output.stdout
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
            drain: Some(drain),
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
