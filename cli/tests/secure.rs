//! `mesh up` in its default, secure posture: the shop end to end against a
//! real Consul 1.8.7 it starts with ACLs default-deny and HTTPS only — every
//! instance registered with its own token file, orders discovering the other
//! three, the printed grpcurl commands working verbatim, the operator's
//! commands (`mesh status`, `mesh cert`, `mesh acl bootstrap`) finding the
//! agent, its CA and the right token by themselves in the checkout, clear
//! refusals for a client that does not trust the agent's CA or speaks plain
//! HTTP, no token in any log, command line or environment, and on SIGINT
//! nothing left running.

mod common;

use std::{
    collections::BTreeMap,
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    alive, cmdline, mesh_env, mesh_in, pids, run_printed_curl_commands,
    run_printed_grpcurl_commands, services, spawn_up, stderr, stdout, wait_for_output,
};
use nix::sys::signal::Signal;
use testkit::{free_port, tool, GrpcurlOutput};

/// Four services and a secure agent from cold start (dev build, shared cores).
const READY_TIMEOUT: Duration = Duration::from_secs(150);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const HOLDERS: [&str; 10] = [
    "master",
    "agent",
    "users",
    "inventory",
    "payments",
    "orders",
    "shipping",
    "gateway",
    "mesh-read",
    "traffic",
];

/// grpcurl over Connect mTLS with the `operator` certificate `mesh up` wrote
/// to `<state>/certs/operator` (`-insecure`: Connect leaves carry a SPIFFE URI,
/// no host name; the server still verifies and authorizes the certificate).
fn grpcurl_operator(state: &Path, args: &[&str]) -> GrpcurlOutput {
    let certs = state.join("certs/operator");
    let output = std::process::Command::new(tool("grpcurl"))
        .args(["-max-time", "10", "-insecure", "-cacert"])
        .arg(certs.join("ca.pem"))
        .arg("-cert")
        .arg(certs.join("cert.pem"))
        .arg("-key")
        .arg(certs.join("key.pem"))
        .args(args)
        .output()
        .expect("run grpcurl");
    GrpcurlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A process's environment.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|byte| *byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

/// Every file under `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_file() {
            text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    text
}

/// `SERVICE INSTANCE ADDRESS STATUS …` rows by instance.
fn rows(table: &str) -> BTreeMap<String, (String, String)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            Some((
                (*columns.get(1)?).to_owned(),
                ((*columns.get(2)?).to_owned(), (*columns.get(3)?).to_owned()),
            ))
        })
        .collect()
}

/// Hardening finding 12: without ACLs anyone who reaches the agent can
/// become `operator` (a leaf for any name is one unauthenticated GET). So
/// `mesh up`, with no flag at all, runs its agent with ACLs default-deny and
/// HTTPS only, and the operator's commands stay as short as before: run in
/// the checkout, they find the agent's address, CA and token by themselves.
#[test]
fn hardening_finding_12_mesh_up_is_acl_default_deny_and_https_by_default() {
    let port = free_port();
    let checkout = tempfile::tempdir().expect("temp dir");
    let state = checkout.path().join(".mesh");
    let consul = format!("127.0.0.1:{port}");
    let args = [
        "--consul-addr",
        consul.as_str(),
        "--instances",
        "1",
        "--ports",
        "dynamic",
        "--drain",
        "300",
    ];
    let started = std::time::Instant::now();
    let mut up = spawn_up(&state, &args, &[]);
    wait_for_output(&mut up, "mesh is up", READY_TIMEOUT);
    eprintln!(
        "mesh up (secure by default): ready after {:?}",
        started.elapsed()
    );
    let url = format!("https://{consul}");
    let log = up.log();
    assert!(log.contains(&format!("Consul UI: {url}/ui/")), "{log}");
    assert!(log.contains("mesh-read.token"), "no UI login hint:\n{log}");

    // It started the agent itself, and says so; plain HTTP is not served.
    let listed = pids(&state);
    let agent_pid = *listed.get("consul").expect("consul in the pid file");
    assert!(alive(agent_pid));
    assert!(state.join("logs/consul.log").is_file());
    let plain = mesh_env(
        &["status", "--consul-addr", &format!("http://{consul}")],
        &[],
    );
    let error = stderr(&plain);
    assert_eq!(plain.status.code(), Some(2), "{error}");
    assert!(error.contains("speaks HTTPS"), "{error}");

    // Token files: one per holder, 0600 in a 0700 folder.
    let secrets: PathBuf = state.join("secrets");
    let ca = state.join("consul/tls/consul-agent-ca.pem");
    assert!(ca.is_file());
    assert_eq!(
        std::fs::metadata(&secrets)
            .expect("secrets")
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let mut tokens = BTreeMap::new();
    for holder in HOLDERS {
        let file = secrets.join(format!("{holder}.token"));
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|error| panic!("{}: {error}", file.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        let token = std::fs::read_to_string(&file)
            .expect("token")
            .trim()
            .to_owned();
        assert_eq!(token.len(), 36, "a UUID in {}", file.display());
        tokens.insert(holder, token);
    }

    // Each instance got its own token file through its environment, and no
    // token is on any command line, in any environment, or in any log.
    for service in services() {
        let pid = listed[&format!("{service}-1")];
        let env = environ(pid);
        let expected = format!(
            "CONSUL_HTTP_TOKEN_FILE={}",
            secrets.join(format!("{service}.token")).display()
        );
        assert!(env.contains(&expected), "{service}: {env:?}");
        assert!(
            env.contains(&format!("CONSUL_HTTP_ADDR={url}")),
            "{service}: {env:?}"
        );
    }
    let logs = format!("{}{}", up.log(), all_text(&state.join("logs")));
    for (holder, token) in &tokens {
        assert!(
            !logs.contains(token.as_str()),
            "the {holder} token is in a log"
        );
        for pid in listed.values() {
            let process = format!("{:?} {:?}", cmdline(*pid), environ(*pid));
            assert!(
                !process.contains(token.as_str()),
                "the {holder} token is in pid {pid}'s command line or environment"
            );
        }
    }

    // The operator's commands in the checkout, no variable set: `mesh status`
    // reads with the read-only token and sees every instance passing.
    let status = mesh_in(checkout.path(), &["status"]);
    let table = stdout(&status);
    assert_eq!(status.status.code(), Some(0), "{table}{}", stderr(&status));
    let listed_rows = rows(&table);
    for service in services() {
        let (_, health) = listed_rows
            .get(&format!("{service}-1"))
            .unwrap_or_else(|| panic!("no {service}-1 in:\n{table}"));
        assert_eq!(health, "passing", "{table}");
    }
    // `mesh cert` writes a certificate for any identity (the key private).
    let cert = mesh_in(checkout.path(), &["cert", "users", "--out", "users-cert"]);
    assert!(cert.status.success(), "{}{}", stdout(&cert), stderr(&cert));
    let key = checkout.path().join("users-cert/key.pem");
    assert_eq!(
        std::fs::metadata(&key)
            .expect("key.pem")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // `mesh acl bootstrap` finds the management token and keeps every token.
    let acl = mesh_in(checkout.path(), &["acl", "bootstrap"]);
    let acl_out = stdout(&acl);
    assert!(acl.status.success(), "{acl_out}{}", stderr(&acl));
    assert_eq!(
        acl_out.matches("(kept,").count(),
        localenv::acl::TOKENS.len(),
        "{acl_out}"
    );
    // Consul's own variables still win over the local environment.
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let mut command = std::process::Command::new(testkit::binary("mesh"));
    command
        .args(["status"])
        .current_dir(checkout.path())
        .env("CONSUL_HTTP_ADDR", &elsewhere);
    let overridden = testkit::output_within(command, Duration::from_secs(30));
    assert_eq!(overridden.status.code(), Some(2), "{}", stdout(&overridden));
    assert!(
        stderr(&overridden).contains(&elsewhere),
        "{}",
        stderr(&overridden)
    );

    // The printed grpcurl commands work verbatim, from the checkout.
    run_printed_grpcurl_commands(&up.log(), checkout.path());
    // So do the printed curl commands of the front door: sign up, read an
    // item, a token from `mesh token`, place, list and cancel an order.
    let curl = run_printed_curl_commands(&up.log(), checkout.path());
    assert!(curl.contains(r#""userId":""#), "no user signed up:\n{curl}");
    assert!(curl.contains(r#""sku":"WIDGET-1""#), "no item:\n{curl}");
    let order_id = curl
        .lines()
        .find_map(|line| line.strip_prefix("order "))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| panic!("no order placed:\n{curl}"))
        .to_owned();
    assert!(
        curl.matches(order_id.as_str()).count() >= 3,
        "the order is not in the list or the cancel:\n{curl}"
    );
    assert!(curl.contains("ORDER_STATUS_CANCELLED"), "{curl}");
    // Without a token, orders are not anyone's to read.
    let gateway = &listed_rows["gateway-1"].0;
    let anonymous = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{gateway}/v1/orders/{order_id}"))
        .output()
        .expect("run curl");
    assert_eq!(stdout(&anonymous), "401", "{}", stderr(&anonymous));
    // The shop page's link signs the demo user in: its token reads the
    // demo user's order.
    let log = up.log();
    let link = log
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with(&format!("http://{gateway}/#token=")))
        .unwrap_or_else(|| panic!("no shop page link:\n{log}"));
    let token = link
        .split_once("#token=")
        .and_then(|(_, rest)| rest.split('&').next())
        .expect("a token in the link");
    let mine = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{gateway}/v1/orders/{order_id}"))
        .output()
        .expect("run curl");
    assert_eq!(stdout(&mine), "200", "{}", stderr(&mine));

    // orders, with its own token (and its Connect identity, issued under
    // that token), finds users, inventory and payments: a whole order goes
    // through over mTLS.
    let users = grpcurl_operator(
        &state,
        &[
            "-d",
            r#"{"page_size":10}"#,
            &listed_rows["users-1"].0,
            "mesh.users.v1.Users/ListUsers",
        ],
    );
    assert!(users.success, "{users:?}");
    let user_id = users.json()["users"][0]["userId"]
        .as_str()
        .expect("the demo user")
        .to_owned();
    let place = format!(
        r#"{{"request_id":"secure-1","user_id":"{user_id}","items":[{{"sku":"WIDGET-1","quantity":1}}]}}"#
    );
    let order = grpcurl_operator(
        &state,
        &[
            "-d",
            &place,
            &listed_rows["orders-1"].0,
            "mesh.orders.v1.Orders/PlaceOrder",
        ],
    );
    assert!(order.success, "{order:?}");
    assert_eq!(
        order.json()["status"],
        "ORDER_STATUS_CONFIRMED",
        "{order:?}"
    );

    // Default deny: no token sees no service at all.
    let ca_text = ca.display().to_string();
    let read_only_text = secrets.join("mesh-read.token").display().to_string();
    let anonymous = mesh_env(
        &["status"],
        &[
            ("CONSUL_HTTP_ADDR", url.as_str()),
            ("CONSUL_CACERT", ca_text.as_str()),
        ],
    );
    assert!(
        stdout(&anonymous).contains("none visible without a token"),
        "{}{}",
        stdout(&anonymous),
        stderr(&anonymous)
    );

    // A client that does not trust the agent's CA refuses to talk to it,
    // in one line naming the fix.
    let untrusting = mesh_env(
        &["status"],
        &[
            ("CONSUL_HTTP_ADDR", url.as_str()),
            ("CONSUL_HTTP_TOKEN_FILE", read_only_text.as_str()),
        ],
    );
    let error = stderr(&untrusting);
    assert_eq!(untrusting.status.code(), Some(2), "{error}");
    assert!(
        error.contains("not trusted") && error.contains("CONSUL_CACERT"),
        "{error}"
    );

    // SIGINT: every instance deregisters with its own token, everything
    // stops, the agent too (its port closes).
    up.child.signal(Signal::SIGINT);
    let exit = up.child.wait(STOP_TIMEOUT).expect("mesh up did not stop");
    assert!(exit.success(), "mesh up exited with {exit}:\n{}", up.log());
    for (name, pid) in listed {
        assert!(!alive(pid), "{name} (pid {pid}) is left");
    }
    assert!(!up.log().contains("cannot deregister"), "{}", up.log());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on the agent's port"
    );
}
