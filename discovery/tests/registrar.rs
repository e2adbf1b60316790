//! Self-registration against a real Consul 1.8 dev agent: GRPC checks that
//! pass, no periodic re-registration, re-registration after an agent restart,
//! registration once Consul comes up, refusal of undialable registrations.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use common::{blocking, config, eventually, registrar_options, registration, HealthServer};
use discovery::{ConfigError, Registrar, RegistrarOptions};
use testkit::ConsulAgent;

const GRPC_SERVICE: &str = "mesh.test.v1.Echo";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn modify_index(agent: &ConsulAgent, service: &str, id: &str) -> u64 {
    let entries = agent.get_json(&format!("/v1/catalog/service/{service}"));
    entries
        .as_array()
        .and_then(|entries| entries.iter().find(|entry| entry["ServiceID"] == id))
        .and_then(|entry| entry["ModifyIndex"].as_u64())
        .unwrap_or_else(|| panic!("{id} not in the catalog: {entries}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_register_with_passing_grpc_checks() {
    let agent = blocking(ConsulAgent::start);
    let a = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let b = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let started = Instant::now();
    let handles = [("echo-a", &a), ("echo-b", &b)].map(|(id, server)| {
        Registrar::spawn(
            config(&agent),
            registration(id, "echo", server),
            registrar_options(),
        )
    });

    let ids = blocking(|| agent.wait_passing("echo", 2, Duration::from_secs(15)));
    eprintln!("both instances passing {:?} after spawn", started.elapsed());
    assert_eq!(ids, ["echo-a", "echo-b"]);

    let entries = agent.get_json("/v1/health/service/echo?passing");
    for (entry, server) in entries.as_array().expect("array").iter().zip([&a, &b]) {
        let service = &entry["Service"];
        assert_eq!(service["Address"], server.addr.ip().to_string());
        assert_eq!(service["Port"], server.addr.port());
        assert_eq!(service["Tags"], serde_json::json!(["test"]));
        assert_eq!(service["Meta"]["proto_package"], "grpc.health.v1");
        assert_eq!(service["Meta"]["instance"], service["ID"]);
        let check = entry["Checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|check| check["ServiceID"] == service["ID"])
            .unwrap_or_else(|| panic!("no service check in {entry}"));
        assert_eq!(check["Type"], "grpc", "{check}");
        assert_eq!(check["Status"], "passing", "{check}");
        let output = check["Output"].as_str().expect("output");
        assert!(
            output.contains(&format!("{}/{GRPC_SERVICE}", server.addr))
                && output.contains("success"),
            "{output}"
        );
    }
    // The agent holds the check as registered: gRPC target and interval.
    let checks = agent.get_json("/v1/agent/checks");
    assert_eq!(checks["service:echo-a"]["Type"], "grpc", "{checks}");

    for handle in &handles {
        assert!(handle.is_registered());
        assert_eq!(handle.registrations(), 1);
        assert_eq!(handle.state().last_error, None);
    }

    // Anti-entropy only looks: several rounds later nothing was re-registered
    // and the catalog entry was not touched (no index bump waking watchers).
    let before = modify_index(&agent, "echo", "echo-a");
    tokio::time::sleep(registrar_options().anti_entropy_interval * 4).await;
    assert_eq!(modify_index(&agent, "echo", "echo-a"), before);
    assert!(handles.iter().all(|handle| handle.registrations() == 1));

    let follower = handles[0].subscribe();
    for handle in handles {
        handle.deregister().await.expect("deregister");
    }
    assert!(blocking(|| agent.registered_ids("echo")).is_empty());
    let last = follower.borrow().clone();
    assert!(last.stopped && !last.registered, "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registers_again_after_the_agent_restarts() {
    let mut agent = blocking(ConsulAgent::start);
    let server = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let handle = Registrar::spawn(
        config(&agent),
        registration("restart-1", "restart", &server),
        RegistrarOptions {
            // The production default: the 5 s bound must hold without tuning.
            anti_entropy_interval: Duration::from_secs(2),
            ..registrar_options()
        },
    );
    blocking(|| agent.wait_passing("restart", 1, Duration::from_secs(15)));
    assert_eq!(handle.registrations(), 1);

    let killed = Instant::now();
    blocking(|| agent.restart());
    let back = Instant::now();
    eprintln!("agent restarted in {:?}", back - killed);
    assert!(
        blocking(|| agent.registered_ids("restart")).is_empty(),
        "a restarted dev agent forgets services"
    );

    eventually(
        "the registrar to register again",
        Duration::from_secs(5),
        || async { (handle.registrations() == 2).then_some(()) },
    )
    .await;
    eprintln!(
        "registered again {:?} after the agent was back ({:?} after the kill)",
        back.elapsed(),
        killed.elapsed()
    );
    assert!(handle.is_registered());
    blocking(|| agent.wait_passing("restart", 1, Duration::from_secs(10)));
    eprintln!(
        "passing again {:?} after the agent was back",
        back.elapsed()
    );

    // And only once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(handle.registrations(), 2);
    handle.deregister().await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keeps_retrying_until_consul_comes_up() {
    let mut agent = blocking(ConsulAgent::start);
    blocking(|| agent.kill());
    let server = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let handle = Registrar::spawn(
        config(&agent),
        registration("late-1", "late", &server),
        registrar_options(),
    );
    let mut state = handle.subscribe();
    let failed = tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|state| state.failures >= 3),
    )
    .await
    .expect("failures are reported")
    .expect("state")
    .clone();
    assert!(!failed.registered);
    let error = failed.last_error.expect("last error");
    assert!(error.contains("/v1/agent/service/register"), "{error}");
    assert_eq!(handle.registrations(), 0);

    blocking(|| agent.restart());
    let back = Instant::now();
    eventually("the first registration", Duration::from_secs(5), || async {
        handle.is_registered().then_some(())
    })
    .await;
    eprintln!("registered {:?} after Consul came up", back.elapsed());
    assert_eq!(handle.registrations(), 1);
    assert_eq!(handle.state().last_error, None);
    blocking(|| agent.wait_passing("late", 1, Duration::from_secs(10)));
    handle.deregister().await.expect("deregister");
    assert!(blocking(|| agent.registered_ids("late")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_is_bounded_and_ok_when_never_registered() {
    let mut agent = blocking(ConsulAgent::start);
    let address = agent.http_addr();
    blocking(|| agent.kill());
    let server = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let consul = discovery::ConsulConfig::new(&address, None).expect("config");
    let handle = Registrar::spawn(
        consul,
        registration("never-1", "never", &server),
        registrar_options(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    handle.deregister().await.expect("never registered: Ok");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undialable_registrations_are_refused_before_consul_sees_them() {
    let agent = blocking(ConsulAgent::start);
    let server = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let mut unspecified = registration("zero-1", "zero", &server);
    unspecified.address = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let error =
        Registrar::try_spawn(config(&agent), unspecified.clone(), registrar_options()).unwrap_err();
    assert!(
        matches!(error, ConfigError::InvalidRegistration { .. }),
        "{error:?}"
    );

    let handle = Registrar::spawn(config(&agent), unspecified, registrar_options());
    let state = handle.state();
    assert!(state.stopped && !state.registered, "{state:?}");
    assert!(state.last_error.expect("error").contains("unspecified"));

    let mut port_zero = registration("zero-2", "zero", &server);
    port_zero.port = 0;
    assert!(Registrar::try_spawn(config(&agent), port_zero, registrar_options()).is_err());

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(blocking(|| agent.registered_ids("zero")).is_empty());
    handle.deregister().await.expect("nothing to deregister");
}
