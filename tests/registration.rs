//! Services register themselves in a real Consul agent with passing gRPC
//! checks, leave it on SIGTERM (the resolver sees the Remove), and register
//! again by themselves after the agent restarts.

use std::time::{Duration, Instant};

use discovery::{ConsulConfig, Resolver, ResolverOptions};
use futures::StreamExt;
use testkit::{ConsulAgent, ServiceOptions, ServiceProcess};
use tower::discover::Change;

fn start(agent: &ConsulAgent, name: &str, data_dir: &std::path::Path) -> ServiceProcess {
    ServiceProcess::start(
        name,
        ServiceOptions {
            consul: Some(agent.http_addr()),
            data_dir: Some(data_dir.to_owned()),
            args: vec!["--check-interval".into(), "500".into()],
            ..ServiceOptions::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_passes_its_grpc_check_and_leaves_on_sigterm() {
    let agent = ConsulAgent::start();
    let data = tempfile::tempdir().expect("temp dir");
    let mut users = vec![
        start(&agent, "users", data.path()),
        start(&agent, "users", data.path()),
    ];
    let _inventory = start(&agent, "inventory", data.path());
    let _payments = start(&agent, "payments", data.path());

    let ids = agent.wait_passing("users", 2, Duration::from_secs(30));
    agent.wait_passing("inventory", 1, Duration::from_secs(30));
    agent.wait_passing("payments", 1, Duration::from_secs(30));
    assert_eq!(ids, {
        let mut expected: Vec<String> = users
            .iter()
            .map(|p| format!("users-{}", p.instance_id))
            .collect();
        expected.sort();
        expected
    });

    // What the Consul UI shows: a gRPC check with its output, address and meta.
    let entries = agent.get_json("/v1/health/service/users");
    for entry in entries.as_array().expect("entries") {
        let service = &entry["Service"];
        assert_eq!(service["Address"], "127.0.0.1");
        assert_eq!(service["Meta"]["proto_package"], "mesh.users.v1");
        assert!(service["Meta"]["version"].is_string());
        let check = entry["Checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|check| check["Type"] == "grpc"))
            .expect("a grpc check");
        assert_eq!(check["Status"], "passing");
        let output = check["Output"].as_str().unwrap_or("");
        assert!(
            output.contains("mesh.users.v1.Users") && output.contains("success"),
            "{output}"
        );
    }

    // SIGTERM: the instance leaves Consul within 2 s, and a watcher sees it go.
    let consul = ConsulConfig::new(&agent.http_addr(), None).expect("consul");
    let resolver = Resolver::spawn(consul, "users", ResolverOptions::default());
    let mut changes = resolver.discover();
    for _ in 0..2 {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.next()).await;
        assert!(matches!(change, Ok(Some(Ok(Change::Insert(..))))));
    }
    let leaving = users.remove(0);
    let leaving_id = format!("users-{}", leaving.instance_id);
    let mut leaving = leaving;
    let sent = Instant::now();
    leaving.child.terminate();
    let removed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(Ok(Change::Remove(id))) = changes.next().await {
                return id;
            }
        }
    })
    .await
    .expect("the resolver saw the Remove within 2 s of SIGTERM");
    eprintln!(
        "Remove of {removed} seen {:?} after SIGTERM",
        sent.elapsed()
    );
    assert_eq!(removed, leaving_id);
    assert!(
        !agent.registered_ids("users").contains(&leaving_id),
        "deregistered, not just critical"
    );
    let status = tokio::task::spawn_blocking(move || leaving.child.wait(Duration::from_secs(10)))
        .await
        .expect("join");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "a SIGTERMed service exits 0"
    );
}

#[test]
fn services_register_again_after_the_agent_restarts() {
    let mut agent = ConsulAgent::start();
    let data = tempfile::tempdir().expect("temp dir");
    let _users = start(&agent, "users", data.path());
    let _payments = start(&agent, "payments", data.path());
    agent.wait_passing("users", 1, Duration::from_secs(30));
    agent.wait_passing("payments", 1, Duration::from_secs(30));

    agent.restart();
    let restarted = Instant::now();
    testkit::wait_until(
        "users and payments registered again",
        Duration::from_secs(5),
        || {
            (agent.registered_ids("users").len() == 1
                && agent.registered_ids("payments").len() == 1)
                .then_some(())
        },
    );
    eprintln!(
        "registered again {:?} after the agent restarted",
        restarted.elapsed()
    );
    agent.wait_passing("users", 1, Duration::from_secs(30));
}

#[test]
fn a_sigkilled_instance_turns_critical() {
    let agent = ConsulAgent::start();
    let data = tempfile::tempdir().expect("temp dir");
    let mut users = start(&agent, "users", data.path());
    let id = format!("users-{}", users.instance_id);
    agent.wait_passing("users", 1, Duration::from_secs(30));
    users.child.kill();
    let killed = Instant::now();
    testkit::wait_until(
        "the killed instance to turn critical",
        Duration::from_secs(5),
        || {
            let entries = agent.get_json("/v1/health/checks/users");
            entries
                .as_array()?
                .iter()
                .any(|check| check["ServiceID"] == id.as_str() && check["Status"] == "critical")
                .then_some(())
        },
    );
    eprintln!(
        "critical {:?} after SIGKILL (check interval 500 ms)",
        killed.elapsed()
    );
    assert!(agent.passing_ids("users").is_empty());
    assert_eq!(
        agent.registered_ids("users"),
        vec![id],
        "still registered until DeregisterCriticalServiceAfter"
    );
}
