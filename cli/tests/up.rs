//! `mesh up`: the whole mesh as real processes — every service passing in
//! Consul and answering grpcurl over Connect mTLS (the printed commands work
//! verbatim), default-deny intentions, demo data seeded once, a crashed
//! instance restarted, and on SIGINT a clean stop with nothing left behind;
//! the intentions of an agent it did not start left alone unless asked, and
//! plaintext Consul only on request (`--insecure-consul`).

mod common;

use std::{net::TcpStream, time::Duration};

use common::{alive, pids, run_printed_grpcurl_commands, services, spawn_up, wait_for_output};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use testkit::{free_port, grpcurl, grpcurl_mtls, wait_until, CertFiles, ConsulAgent};

/// `mesh up` prints this once everything passes and the demo data is in.
const READY_LINE: &str = "mesh is up";
/// Four services from cold start (the dev build, two cores shared).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// SIGINT to exit: drain 300 ms + Consul deregistration, generously.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// 1 instance each on free ports, short drain.
const LIGHT: [&str; 6] = ["--instances", "1", "--ports", "dynamic", "--drain", "300"];

/// `127.0.0.1:<port>` of `service`'s passing instance, from Consul.
fn address(agent: &ConsulAgent, service: &str) -> String {
    let entries = agent.get_json(&format!("/v1/health/service/{service}?passing"));
    let port = entries[0]["Service"]["Port"]
        .as_u64()
        .unwrap_or_else(|| panic!("no passing {service}: {entries}"));
    format!("127.0.0.1:{port}")
}

fn demo_user_id(agent: &ConsulAgent, certs: &CertFiles) -> (String, usize) {
    let users = grpcurl_mtls(
        certs,
        &[
            "-d",
            r#"{"page_size":1000}"#,
            &address(agent, "users"),
            "mesh.users.v1.Users/ListUsers",
        ],
    );
    assert!(users.success, "{users:?}");
    let json = users.json();
    let demo: Vec<&serde_json::Value> = json["users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|user| user["email"] == "demo@example.com")
        .collect();
    assert!(!demo.is_empty(), "no demo user: {json}");
    (
        demo[0]["userId"].as_str().expect("userId").to_owned(),
        demo.len(),
    )
}

fn widget_available(agent: &ConsulAgent, certs: &CertFiles) -> i64 {
    let item = grpcurl_mtls(
        certs,
        &[
            "-d",
            r#"{"sku":"WIDGET-1"}"#,
            &address(agent, "inventory"),
            "mesh.inventory.v1.Inventory/GetItem",
        ],
    );
    assert!(item.success, "{item:?}");
    item.json()["available"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .or_else(|| item.json()["available"].as_i64())
        .unwrap_or(0)
}

/// The intentions of `agent` as `(source, destination, action, modify index)`, sorted.
fn intentions(agent: &ConsulAgent) -> Vec<(String, String, String, u64)> {
    let list = agent.get_json("/v1/connect/intentions");
    let mut found: Vec<_> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|intention| {
            (
                intention["SourceName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                intention["DestinationName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                intention["Action"].as_str().unwrap_or_default().to_owned(),
                intention["ModifyIndex"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    found.sort();
    found
}

/// The shop's call graph, as a cluster's owner would have set it.
const SHOP_INTENTIONS: [(&str, &str, &str); 5] = [
    ("orders", "users", "allow"),
    ("orders", "inventory", "allow"),
    ("orders", "payments", "allow"),
    ("operator", "*", "allow"),
    ("*", "*", "deny"),
];

/// Also Hardening finding 12: `mesh up` pointed at an agent it did not start
/// leaves that cluster's intentions as they are, unless `--apply-intentions`.
#[test]
fn up_serves_all_four_restarts_a_crash_stops_cleanly_and_reruns_without_reseeding() {
    let agent = ConsulAgent::start();
    // The cluster's owner has set the intentions already.
    for (source, destination, action) in SHOP_INTENTIONS {
        agent.set_intention(source, destination, action);
    }
    let owners = intentions(&agent);
    let state = tempfile::tempdir().expect("temp dir");
    let consul = agent.http_addr();
    let mut args = vec!["--consul-addr", consul.as_str()];
    args.extend(LIGHT);

    let started = std::time::Instant::now();
    let mut up = spawn_up(state.path(), &args, &[]);
    wait_for_output(&mut up, READY_LINE, READY_TIMEOUT);
    eprintln!("mesh up: ready after {:?}", started.elapsed());
    assert_eq!(
        intentions(&agent),
        owners,
        "mesh up rewrote the intentions of an agent it did not start:\n{}",
        up.log()
    );

    // Every service passes in Consul, with the instance ids mesh up gives.
    for service in services() {
        assert_eq!(
            agent.passing_ids(service),
            [format!("{service}-1")],
            "{}",
            up.log()
        );
    }
    // It used the agent it was given, and did not start one.
    let first_pids = pids(state.path());
    assert!(!first_pids.contains_key("consul"), "{first_pids:?}");
    for service in services() {
        let pid = first_pids[&format!("{service}-1")];
        assert!(alive(pid), "{service}-1 (pid {pid}) is not running");
    }
    assert!(
        up.log().contains("grpcurl"),
        "no grpcurl commands printed:\n{}",
        up.log()
    );

    // Each service answers grpcurl over mTLS as `operator`; the demo data is there.
    let certs = agent.cert_files("operator");
    let (user_id, demo_users) = demo_user_id(&agent, &certs);
    assert_eq!(demo_users, 1);
    assert!(
        up.log().contains(&user_id),
        "the demo user id is not in the printed commands"
    );
    assert_eq!(widget_available(&agent, &certs), 100);
    let payment = grpcurl_mtls(
        &certs,
        &[
            "-d",
            r#"{"payment_id":"no-such-payment"}"#,
            &address(&agent, "payments"),
            "mesh.payments.v1.Payments/GetPayment",
        ],
    );
    assert!(
        !payment.success && payment.stderr.contains("NotFound"),
        "{payment:?}"
    );
    let list_orders = format!(r#"{{"user_id":"{user_id}"}}"#);
    let orders = grpcurl_mtls(
        &certs,
        &[
            "-d",
            &list_orders,
            &address(&agent, "orders"),
            "mesh.orders.v1.Orders/ListOrders",
        ],
    );
    assert!(orders.success, "{orders:?}");
    // orders reaches users, inventory and payments through the mesh.
    let place = format!(
        r#"{{"request_id":"up-test-1","user_id":"{user_id}","items":[{{"sku":"WIDGET-1","quantity":1}}]}}"#
    );
    let order = grpcurl_mtls(
        &certs,
        &[
            "-d",
            &place,
            &address(&agent, "orders"),
            "mesh.orders.v1.Orders/PlaceOrder",
        ],
    );
    assert!(order.success, "{order:?}");
    assert_eq!(
        order.json()["status"],
        "ORDER_STATUS_CONFIRMED",
        "{order:?}"
    );
    assert_eq!(widget_available(&agent, &certs), 99);

    // Its event goes through the outbox and the broker mesh up started (and
    // registered in Consul) to shipping: the order gets its one shipment.
    assert!(alive(first_pids["redis"]), "{first_pids:?}");
    let broker = agent.get_json("/v1/health/service/mesh-broker?passing");
    assert_eq!(broker[0]["Service"]["Meta"]["scheme"], "redis", "{broker}");
    let order_id = order.json()["orderId"]
        .as_str()
        .expect("an order id")
        .to_owned();
    let by_order = format!(r#"{{"order_id":"{order_id}"}}"#);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let shipments = loop {
        let listed = grpcurl_mtls(
            &certs,
            &[
                "-d",
                &by_order,
                &address(&agent, "shipping"),
                "mesh.shipping.v1.Shipping/ListShipments",
            ],
        );
        assert!(listed.success, "{listed:?}");
        let shipments = listed.json()["shipments"].clone();
        if shipments.as_array().is_some_and(|list| !list.is_empty()) {
            break shipments;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no shipment for {order_id} within 60 s:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(shipments.as_array().map(Vec::len), Some(1), "{shipments}");
    assert_eq!(
        shipments[0]["status"], "SHIPMENT_STATUS_PENDING",
        "{shipments}"
    );

    // The printed grpcurl commands work verbatim (the PlaceOrder one orders a widget).
    run_printed_grpcurl_commands(&up.log(), state.path());
    assert_eq!(widget_available(&agent, &certs), 98);

    // `mesh status` shows the events path: the broker mesh up registered
    // and, once relay and shipping caught up with those orders, no outbox
    // backlog and no consumer lag (read from the services' metrics).
    let status_args = ["status", "--consul-addr", consul.as_str()];
    let events = wait_until(
        "mesh status to show the events drained",
        Duration::from_secs(60),
        || {
            let status = common::mesh(&status_args);
            let text = String::from_utf8_lossy(&status.stdout).into_owned();
            let line = text.lines().find(|line| line.starts_with("events: "))?;
            (line.contains("outbox backlog 0 ") && line.contains("consumer lag shipping 0"))
                .then(|| line.to_owned())
        },
    );
    assert!(
        events.starts_with("events: broker redis at 127.0.0.1:") && events.contains("(passing)"),
        "{events}"
    );

    // Zero trust: no plaintext, and default-deny intentions (users may not call payments).
    let plaintext = grpcurl(&[&address(&agent, "orders"), "list"]);
    assert!(
        !plaintext.success && plaintext.stderr.contains("Unauthenticated"),
        "{plaintext:?}"
    );
    let as_users = agent.cert_files("users");
    let denied = grpcurl_mtls(
        &as_users,
        &[
            "-d",
            r#"{"payment_id":"no-such-payment"}"#,
            &address(&agent, "payments"),
            "mesh.payments.v1.Payments/GetPayment",
        ],
    );
    assert!(
        !denied.success && denied.stderr.contains("PermissionDenied"),
        "{denied:?}"
    );

    // A crashed instance is restarted (new pid, passing again).
    let old_payments = address(&agent, "payments");
    let crashed = first_pids["payments-1"];
    kill(Pid::from_raw(crashed as i32), Signal::SIGKILL).expect("SIGKILL payments-1");
    let restarted = wait_until("payments-1 restarted", Duration::from_secs(30), || {
        let pid = *pids(state.path()).get("payments-1")?;
        (pid != crashed && up.log().contains("restarted payments-1")).then_some(pid)
    });
    // Passing again: the new process (a new port) has registered.
    wait_until(
        "the restarted payments-1 to pass in Consul",
        Duration::from_secs(30),
        || {
            let now = agent.get_json("/v1/health/service/payments?passing");
            let port = now[0]["Service"]["Port"].as_u64()?;
            (format!("127.0.0.1:{port}") != old_payments).then_some(())
        },
    );
    assert!(!alive(crashed), "the crashed payments-1 was not reaped");

    // SIGINT: exit 0, every process gone, every registration gone.
    up.child.signal(Signal::SIGINT);
    let status = up
        .child
        .wait(STOP_TIMEOUT)
        .expect("mesh up did not stop after SIGINT");
    assert!(
        status.success(),
        "mesh up exited with {status}:\n{}",
        up.log()
    );
    let mut all: Vec<u32> = first_pids.values().copied().collect();
    all.push(restarted);
    for pid in all {
        assert!(
            !alive(pid),
            "pid {pid} is left after mesh up stopped:\n{}",
            up.log()
        );
    }
    for service in services() {
        assert_eq!(
            agent.registered_ids(service),
            Vec::<String>::new(),
            "{service} still registered"
        );
    }
    assert!(
        !state.path().join("pids").exists(),
        "the pid file was not removed"
    );
    drop(up);

    // A second run on the same state keeps the data as it is; asked to, it
    // sets the mesh's intentions (the one the owner removed is back).
    agent.delete_intention("orders", "payments");
    let mut asked = args.clone();
    asked.push("--apply-intentions");
    let mut again = spawn_up(state.path(), &asked, &[]);
    wait_for_output(&mut again, READY_LINE, READY_TIMEOUT);
    assert!(
        intentions(&agent)
            .iter()
            .any(|(source, destination, action, _)| source == "orders"
                && destination == "payments"
                && action == "allow"),
        "--apply-intentions did not set orders → payments:\n{}",
        again.log()
    );
    assert_eq!(demo_user_id(&agent, &certs), (user_id, 1));
    assert_eq!(
        widget_available(&agent, &certs),
        98,
        "a re-run added stock again"
    );
    again.child.signal(Signal::SIGINT);
    let status = again
        .child
        .wait(STOP_TIMEOUT)
        .expect("second mesh up did not stop");
    assert!(status.success(), "{}", again.log());
}

/// Hardening finding 12: plaintext only when asked, saying what it gives up.
/// `--insecure-consul` starts a plain dev agent (ACLs off, HTTP) and prints
/// why that is not a security boundary; a signal while it starts stops it.
#[test]
fn insecure_consul_is_explicit_and_says_what_it_gives_up() {
    let port = free_port();
    let state = tempfile::tempdir().expect("temp dir");
    let consul = format!("127.0.0.1:{port}");
    let mut args = vec!["--insecure-consul", "--consul-addr", consul.as_str()];
    args.extend(LIGHT);
    let mut up = spawn_up(state.path(), &args, &[]);
    wait_for_output(&mut up, "started a dev agent", Duration::from_secs(60));
    let log = up.log();
    assert!(
        log.contains("ACLs off") && log.contains("not a security boundary"),
        "{log}"
    );
    assert!(log.contains(&format!("http://{consul}")), "{log}");
    let agent = *pids(state.path())
        .get("consul")
        .expect("consul in the pid file");
    up.child.signal(Signal::SIGINT);
    let exit = up
        .child
        .wait(STOP_TIMEOUT)
        .expect("mesh up did not stop after SIGINT");
    assert!(exit.success(), "mesh up exited with {exit}:\n{}", up.log());
    assert!(!alive(agent), "the agent (pid {agent}) is left");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on the agent's port"
    );
}
