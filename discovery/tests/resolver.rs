//! Health-aware discovery against a real Consul 1.8 dev agent: removals after
//! deregistration, insert latency after a check passes, the last good set kept
//! through an outage, IPv6 endpoints, tag filters.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    blocking, config, describe, eventually, next_change, registrar_options, registration,
    resolver_options, HealthServer,
};
use discovery::{Registrar, Resolver, ResolverOptions};
use testkit::ConsulAgent;
use tower::discover::Change;

const GRPC_SERVICE: &str = "mesh.test.v1.Echo";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deregistration_reaches_the_resolver_as_a_remove() {
    let agent = blocking(ConsulAgent::start);
    let a = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let b = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let handle_a = Registrar::spawn(
        config(&agent),
        registration("gone-a", "gone", &a),
        registrar_options(),
    );
    let handle_b = Registrar::spawn(
        config(&agent),
        registration("gone-b", "gone", &b),
        registrar_options(),
    );
    blocking(|| agent.wait_passing("gone", 2, Duration::from_secs(15)));

    let resolver = Resolver::spawn(config(&agent), "gone", resolver_options());
    let mut discover = resolver.discover();
    let mut inserted = Vec::new();
    while inserted.len() < 2 {
        match next_change(&mut discover, Duration::from_secs(5)).await {
            Change::Insert(id, endpoint) => {
                assert_eq!(
                    endpoint.address,
                    if id == "gone-a" { a.addr } else { b.addr }
                );
                assert_eq!(endpoint.service, "gone");
                assert_eq!(endpoint.meta["instance"], id);
                inserted.push(id);
            }
            Change::Remove(id) => panic!("unexpected removal of {id}"),
        }
    }
    inserted.sort();
    assert_eq!(inserted, ["gone-a", "gone-b"]);

    let started = Instant::now();
    handle_a.deregister().await.expect("deregister");
    let change = next_change(&mut discover, Duration::from_secs(2)).await;
    let latency = started.elapsed();
    eprintln!("Remove {latency:?} after deregister() was called");
    assert!(
        matches!(&change, Change::Remove(id) if id == "gone-a"),
        "{}",
        describe(&change)
    );
    let snapshot = resolver.snapshot();
    assert_eq!(snapshot.endpoints.keys().collect::<Vec<_>>(), ["gone-b"]);
    assert!(!snapshot.stale);
    handle_b.deregister().await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_instance_is_inserted_within_a_second_of_passing() {
    let agent = Arc::new(blocking(ConsulAgent::start));
    // The watch is idle, blocking on an empty set, when the instance appears.
    let resolver = Resolver::spawn(
        config(&agent),
        "late",
        ResolverOptions {
            wait: Duration::from_secs(30),
            ..resolver_options()
        },
    );
    let mut discover = resolver.discover();
    eventually("the first answer", Duration::from_secs(5), || async {
        resolver.snapshot().initialized.then_some(())
    })
    .await;
    assert!(resolver.snapshot().endpoints.is_empty());

    let server = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let handle = Registrar::spawn(
        config(&agent),
        registration("late-1", "late", &server),
        registrar_options(),
    );
    // Watch Consul's own answer on another thread, to know when it passed.
    let poller = {
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if agent.passing_ids("late") == ["late-1"] {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        })
    };
    let change = next_change(&mut discover, Duration::from_secs(20)).await;
    let inserted_at = Instant::now();
    assert!(
        matches!(&change, Change::Insert(id, endpoint) if id == "late-1" && endpoint.address == server.addr),
        "{}",
        describe(&change)
    );
    let passing_at = poller
        .await
        .expect("poller")
        .expect("late-1 passed in Consul");
    let latency = inserted_at.saturating_duration_since(passing_at);
    if inserted_at >= passing_at {
        eprintln!("Insert {latency:?} after a 5 ms poller saw late-1 passing in Consul");
    } else {
        eprintln!(
            "Insert {:?} before a 5 ms poller saw late-1 passing in Consul",
            passing_at - inserted_at
        );
    }
    assert!(latency <= Duration::from_secs(1), "{latency:?}");
    handle.deregister().await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_good_set_survives_a_consul_outage() {
    let mut agent = blocking(ConsulAgent::start);
    let server = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let handle = Registrar::spawn(
        config(&agent),
        registration("steady-1", "steady", &server),
        registrar_options(),
    );
    blocking(|| agent.wait_passing("steady", 1, Duration::from_secs(15)));
    let resolver = Resolver::spawn(config(&agent), "steady", resolver_options());
    let mut snapshots = resolver.subscribe();
    let before = snapshots
        .wait_for(|snapshot| snapshot.endpoints.len() == 1)
        .await
        .expect("snapshot")
        .clone();
    assert!(before.initialized && !before.stale && before.last_error.is_none());
    let mut discover = resolver.discover();
    assert!(matches!(
        next_change(&mut discover, Duration::from_secs(1)).await,
        Change::Insert(..)
    ));

    let killed = Instant::now();
    blocking(|| agent.kill());
    let stale = tokio::time::timeout(
        Duration::from_secs(5),
        snapshots.wait_for(|snapshot| snapshot.stale),
    )
    .await
    .expect("stale within 5 s")
    .expect("snapshot")
    .clone();
    eprintln!(
        "stale {:?} after the kill: {:?}",
        killed.elapsed(),
        stale.last_error
    );
    assert!(stale.last_error.is_some());
    assert_eq!(
        stale.endpoints, before.endpoints,
        "the last good set is kept"
    );
    let errors = stale.errors;
    let more = tokio::time::timeout(
        Duration::from_secs(5),
        snapshots.wait_for(|snapshot| snapshot.errors >= errors + 3),
    )
    .await
    .expect("errors keep growing while Consul is down")
    .expect("snapshot")
    .clone();
    assert!(more.stale);
    assert_eq!(more.endpoints, before.endpoints);
    assert_eq!(resolver.snapshot().addresses(), [server.addr]);
    // No Remove while Consul is unreachable.
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            futures::StreamExt::next(&mut discover)
        )
        .await
        .is_err(),
        "the discover stream changed during the outage"
    );

    blocking(|| agent.restart());
    let back = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(5),
        snapshots.wait_for(|snapshot| !snapshot.stale),
    )
    .await
    .expect("stale clears once Consul answers")
    .expect("snapshot");
    eprintln!(
        "stale cleared {:?} after the agent was back",
        back.elapsed()
    );
    // The restarted agent starts empty; the registrar puts the instance back
    // and once its check passes the resolver has it again.
    eventually(
        "the instance back in the resolver",
        Duration::from_secs(10),
        || async {
            let snapshot = resolver.snapshot();
            (snapshot.endpoints.contains_key("steady-1") && !snapshot.stale).then_some(())
        },
    )
    .await;
    eprintln!(
        "instance back in the resolver {:?} after the agent was back",
        back.elapsed()
    );
    assert_eq!(handle.registrations(), 2);
    assert!(resolver.snapshot().last_error.is_none());
    handle.deregister().await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ipv6_endpoints_and_tag_filters() {
    let agent = blocking(ConsulAgent::start);
    let v6 = HealthServer::start("::1".parse().expect("v6"), GRPC_SERVICE).await;
    let v4 = HealthServer::start(LOCALHOST, GRPC_SERVICE).await;
    let mut canary = registration("dual-v6", "dual", &v6);
    canary.tags.push("canary".into());
    let handles = [
        Registrar::spawn(config(&agent), canary, registrar_options()),
        Registrar::spawn(
            config(&agent),
            registration("dual-v4", "dual", &v4),
            registrar_options(),
        ),
    ];
    let all = Resolver::spawn(config(&agent), "dual", resolver_options());
    let canaries = Resolver::spawn(
        config(&agent),
        "dual",
        ResolverOptions {
            tag: Some("canary".into()),
            stale: true,
            ..resolver_options()
        },
    );
    eventually(
        "both instances in the resolver",
        Duration::from_secs(15),
        || async { (all.snapshot().endpoints.len() == 2).then_some(()) },
    )
    .await;
    let snapshot = all.snapshot();
    assert_eq!(snapshot.endpoints["dual-v6"].address, v6.addr);
    assert!(snapshot.endpoints["dual-v6"].address.is_ipv6());
    assert_eq!(snapshot.endpoints["dual-v4"].address, v4.addr);
    assert!(snapshot.updates >= 1 && snapshot.index > 0);
    eventually("the canary resolver", Duration::from_secs(5), || async {
        let snapshot = canaries.snapshot();
        (snapshot.endpoints.keys().collect::<Vec<_>>() == ["dual-v6"]).then_some(())
    })
    .await;
    for handle in handles {
        handle.deregister().await.expect("deregister");
    }
}
