//! Consul in its production posture: a real Consul 1.8.7 agent with ACLs on
//! (`default_policy = "deny"`) and its API on HTTPS only, with the policies
//! the project ships (`deploy/consul/acl/`). One agent for the whole file:
//! the scenarios run in sequence on it.
//!
//! - each service registers with its own token and orders' token discovers
//!   the other three; no token sees nothing;
//! - a token without service:write is refused with a line naming what it lacks;
//! - the token file is rotated under load (the old token revoked at once)
//!   with 0 failed calls;
//! - a client that does not trust the agent's CA, expects another name, or
//!   speaks the wrong protocol gets one readable line naming what to fix.

mod common;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{
    blocking, eventually, registrar_options, registration, resolver_options, HealthServer,
};
use discovery::{
    ConsulConfig, ConsulError, ConsulHttp, ConsulSettings, Registrar, RegistrarHandle, Resolver,
};
use testkit::{AclToken, ConsulAgent};

/// The policies as shipped, one per service.
const POLICIES: [(&str, &str, &str); 4] = [
    (
        "users",
        "mesh-users",
        include_str!("../../deploy/consul/acl/users.hcl"),
    ),
    (
        "inventory",
        "mesh-inventory",
        include_str!("../../deploy/consul/acl/inventory.hcl"),
    ),
    (
        "payments",
        "mesh-payments",
        include_str!("../../deploy/consul/acl/payments.hcl"),
    ),
    (
        "orders",
        "mesh-orders",
        include_str!("../../deploy/consul/acl/orders.hcl"),
    ),
];

const CALL: Duration = Duration::from_secs(5);

/// Writes `token` to `path` the way a secret store does: a new file renamed over the old.
fn write_token(path: &Path, token: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, format!("{token}\n")).expect("write token");
    std::fs::rename(&temporary, path).expect("rename token");
}

/// HTTPS to `agent`, trusting its CA, the token read from `token_file`.
fn secure_config(agent: &ConsulAgent, token_file: Option<PathBuf>) -> ConsulConfig {
    ConsulSettings {
        address: Some(agent.url()),
        ca_file: agent.ca_file().map(Path::to_owned),
        token_file,
        ..ConsulSettings::default()
    }
    .build()
    .expect("secure config")
}

struct Registered {
    _servers: Vec<HealthServer>,
    handles: Vec<RegistrarHandle>,
    tokens: Vec<(String, PathBuf, AclToken)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consul_with_acls_default_deny_and_https_only() {
    let agent = blocking(ConsulAgent::start_secure);
    for (_, policy, rules) in POLICIES {
        agent.create_policy(policy, rules);
    }
    let dir = tempfile::tempdir().expect("temp dir");

    let registered = each_service_registers_with_its_own_token(&agent, dir.path()).await;
    orders_discovers_the_others_and_no_token_sees_nothing(&agent, &registered).await;
    a_token_without_service_write_is_refused_clearly(&agent, dir.path()).await;
    the_token_file_rotates_under_load_with_no_failed_call(&agent, &registered).await;
    wrong_trust_name_or_protocol_is_refused_clearly(&agent, dir.path()).await;

    for handle in registered.handles {
        handle
            .deregister()
            .await
            .expect("deregister with its own token");
    }
    assert!(
        agent.passing_ids("users").is_empty(),
        "deregistered with the service's token"
    );
}

async fn each_service_registers_with_its_own_token(agent: &ConsulAgent, dir: &Path) -> Registered {
    let mut servers = Vec::new();
    let mut handles = Vec::new();
    let mut tokens = Vec::new();
    for (service, policy, _) in POLICIES {
        let token = agent.create_token(service, &[policy]);
        let file = dir.join(format!("{service}.token"));
        write_token(&file, &token.secret);
        let grpc_service = format!("mesh.{service}.v1.Service");
        let server = HealthServer::start(Ipv4Addr::LOCALHOST.into(), &grpc_service).await;
        let config = secure_config(agent, Some(file.clone()));
        assert!(config.is_https());
        let handle = Registrar::try_spawn(
            config,
            registration(&format!("{service}-1"), service, &server),
            registrar_options(),
        )
        .expect("valid registration");
        servers.push(server);
        handles.push(handle);
        tokens.push((service.to_owned(), file, token));
    }
    for handle in &handles {
        eventually(
            &format!("{} registered with its own token", handle.id()),
            Duration::from_secs(20),
            || async { handle.is_registered().then_some(()) },
        )
        .await;
        assert_eq!(handle.state().failures, 0, "{:?}", handle.state());
    }
    for (service, _, _) in POLICIES {
        blocking(|| agent.wait_passing(service, 1, Duration::from_secs(30)));
    }
    Registered {
        _servers: servers,
        handles,
        tokens,
    }
}

async fn orders_discovers_the_others_and_no_token_sees_nothing(
    agent: &ConsulAgent,
    registered: &Registered,
) {
    let orders_file = registered.tokens[3].1.clone();
    for upstream in ["users", "inventory", "payments"] {
        let resolver = Resolver::spawn(
            secure_config(agent, Some(orders_file.clone())),
            upstream,
            resolver_options(),
        );
        let ids = eventually(
            &format!("orders' token to resolve {upstream}"),
            Duration::from_secs(20),
            || async {
                let snapshot = resolver.snapshot();
                (!snapshot.endpoints.is_empty())
                    .then(|| snapshot.endpoints.keys().cloned().collect::<Vec<_>>())
            },
        )
        .await;
        assert_eq!(ids, [format!("{upstream}-1")]);
    }
    // Default deny: without a token the same query answers, filtered to nothing.
    let anonymous = Resolver::spawn(secure_config(agent, None), "users", resolver_options());
    eventually(
        "the anonymous watch to answer",
        Duration::from_secs(20),
        || async { anonymous.snapshot().initialized.then_some(()) },
    )
    .await;
    assert!(
        anonymous.snapshot().endpoints.is_empty(),
        "{:?}",
        anonymous.snapshot()
    );
}

async fn a_token_without_service_write_is_refused_clearly(agent: &ConsulAgent, dir: &Path) {
    agent.create_policy("read-users", "service \"users\" { policy = \"read\" }");
    let reader = agent.create_token("reader", &["read-users"]);
    let file = dir.join("reader.token");
    write_token(&file, &reader.secret);
    let server = HealthServer::start(Ipv4Addr::LOCALHOST.into(), "mesh.users.v1.Users").await;
    let handle = Registrar::spawn(
        secure_config(agent, Some(file.clone())),
        registration("users-2", "users", &server),
        registrar_options(),
    );
    let error = eventually(
        "the refused registration",
        Duration::from_secs(20),
        || async { handle.state().last_error },
    )
    .await;
    eprintln!("refused: {error}");
    assert!(!handle.is_registered());
    for expected in [
        "PUT /v1/agent/service/register",
        "403 Permission denied",
        &format!("CONSUL_HTTP_TOKEN_FILE {}", file.display()),
        "service:write on \"users\"",
    ] {
        assert!(
            error.contains(expected),
            "{expected:?} missing from: {error}"
        );
    }
    assert!(
        !error.contains(&reader.secret),
        "the token is in the message"
    );
    assert!(!error.contains('\n'), "one line: {error}");
    assert!(blocking(|| agent.registered_ids("users")) == ["users-1"]);

    // No token at all says so.
    let anonymous = Registrar::spawn(
        secure_config(agent, None),
        registration("users-3", "users", &server),
        registrar_options(),
    );
    let error = eventually(
        "the anonymous registration",
        Duration::from_secs(20),
        || async { anonymous.state().last_error },
    )
    .await;
    assert!(
        error.contains("with no token") && error.contains("403"),
        "{error}"
    );
    drop((handle, anonymous));
}

async fn the_token_file_rotates_under_load_with_no_failed_call(
    agent: &ConsulAgent,
    registered: &Registered,
) {
    let (_, file, first) = registered.tokens[3].clone();
    let orders = &registered.handles[3];
    let failures_before = orders.state().failures;
    let config = secure_config(agent, Some(file.clone()));
    let http = ConsulHttp::new(&config);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (http, stop, calls, failed) =
            (http.clone(), stop.clone(), calls.clone(), failed.clone());
        let upstream = ["users", "inventory", "payments", "orders"][worker];
        load.push(tokio::spawn(async move {
            let path = format!("/v1/health/service/{upstream}");
            while !stop.load(Ordering::Relaxed) {
                let outcome = http.get(&path, &format!("{path}?passing"), CALL).await;
                calls.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    Ok(answer) if answer.status == 200 => {
                        let entries: Vec<serde_json::Value> =
                            serde_json::from_slice(&answer.body).expect("JSON");
                        if entries.len() != 1 {
                            failed
                                .lock()
                                .unwrap()
                                .push(format!("{upstream}: {} entries", entries.len()));
                        }
                    }
                    Ok(answer) => failed
                        .lock()
                        .unwrap()
                        .push(format!("{upstream}: {}", answer.status)),
                    Err(error) => failed.lock().unwrap().push(error.to_string()),
                }
            }
        }));
    }
    // Five rotations: a new token in the file, the old one revoked at once.
    let mut current = first;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let next = blocking(|| agent.create_token("orders (rotated)", &["mesh-orders"]));
        write_token(&file, &next.secret);
        blocking(|| agent.delete_token(&current));
        current = next;
    }
    // The registrar's anti-entropy (its own reader of the same file) keeps working too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    let calls = calls.load(Ordering::Relaxed);
    let failed = failed.lock().unwrap().clone();
    eprintln!(
        "{calls} calls during 5 token rotations, {} failed",
        failed.len()
    );
    assert!(calls >= 40, "too little load to mean anything: {calls}");
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert_eq!(
        orders.state().failures,
        failures_before,
        "{:?}",
        orders.state()
    );
    assert!(orders.is_registered());
}

async fn wrong_trust_name_or_protocol_is_refused_clearly(agent: &ConsulAgent, dir: &Path) {
    let call = |config: ConsulConfig| async move {
        ConsulHttp::new(&config)
            .get("/v1/status/leader", "/v1/status/leader", CALL)
            .await
    };
    let expect_tls = |result: Result<discovery::Answer, ConsulError>, expected: &[&str]| {
        let error = result.expect_err("must be refused");
        assert!(matches!(error, ConsulError::Tls { .. }), "{error:?}");
        let text = error.to_string();
        eprintln!("refused: {text}");
        for part in expected {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
        assert!(!text.contains('\n'), "one line: {text}");
    };

    // Another CA (made the same way, by `consul tls ca create`).
    let other = dir.join("other-ca");
    std::fs::create_dir_all(&other).expect("dir");
    let made = std::process::Command::new(testkit::tool("consul"))
        .args(["tls", "ca", "create"])
        .current_dir(&other)
        .output()
        .expect("consul tls ca create");
    assert!(made.status.success(), "{made:?}");
    let untrusting = ConsulSettings {
        address: Some(agent.url()),
        ca_file: Some(other.join("consul-agent-ca.pem")),
        ..ConsulSettings::default()
    }
    .build()
    .expect("config");
    expect_tls(
        call(untrusting).await,
        &["not trusted", "UnknownIssuer", "CONSUL_CACERT"],
    );

    // CONSUL_CAPATH: a folder holding another CA and the agent's is trusted;
    // the other CA alone is not; a folder with a file that holds no
    // certificate, or with no file at all, is refused before any call.
    let folder = |name: &str, files: &[(&str, &[u8])]| {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).expect("dir");
        for (file, content) in files {
            std::fs::write(path.join(file), content).expect("write");
        }
        path
    };
    let capath = |path: PathBuf| ConsulSettings {
        address: Some(agent.url()),
        ca_path: Some(path),
        ..ConsulSettings::default()
    };
    let agent_ca = std::fs::read(agent.ca_file().expect("the secure agent's CA")).expect("CA");
    let other_ca = std::fs::read(other.join("consul-agent-ca.pem")).expect("other CA");
    let both = folder(
        "ca.d",
        &[("0-other.pem", &other_ca), ("1-agent.pem", &agent_ca)],
    );
    let answer = call(capath(both).build().expect("config"))
        .await
        .expect("a CA folder holding the agent's CA is trusted");
    assert_eq!(answer.status, 200);
    let only_other = folder("other.d", &[("other.pem", &other_ca)]);
    expect_tls(
        call(capath(only_other.clone()).build().expect("config")).await,
        &[
            "not trusted",
            &format!("CONSUL_CAPATH {}", only_other.display()),
        ],
    );
    for (name, files) in [
        (
            "junk.d",
            &[
                ("agent.pem", &agent_ca[..]),
                ("README", b"not a certificate"),
            ][..],
        ),
        ("empty.d", &[][..]),
    ] {
        let error = capath(folder(name, files))
            .build()
            .expect_err("refused at start-up");
        let text = error.to_string();
        assert!(
            text.contains("CONSUL_CAPATH") && text.contains(name),
            "{text}"
        );
    }

    // The right CA, the wrong name; then the agent's own name.
    let settings = |name: &str| ConsulSettings {
        address: Some(agent.url()),
        ca_file: agent.ca_file().map(Path::to_owned),
        tls_server_name: Some(name.to_owned()),
        ..ConsulSettings::default()
    };
    let misnamed = settings("consul.example.com").build().expect("config");
    expect_tls(
        call(misnamed).await,
        &["not valid for the name", "CONSUL_TLS_SERVER_NAME"],
    );
    let named = settings("server.dc1.consul").build().expect("config");
    let answer = call(named).await.expect("the agent's own name is accepted");
    assert_eq!(answer.status, 200);

    // Plain HTTP to the HTTPS-only agent.
    let plain = ConsulConfig::new(&format!("http://{}", agent.http_addr()), None).expect("config");
    expect_tls(
        call(plain).await,
        &["speaks HTTPS", "https://", "CONSUL_HTTP_SSL"],
    );

    // HTTPS to something that speaks plain HTTP.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let https_to_plain = ConsulSettings {
        address: Some(format!("https://{address}")),
        ca_file: agent.ca_file().map(Path::to_owned),
        ..ConsulSettings::default()
    }
    .build()
    .expect("config");
    expect_tls(
        call(https_to_plain).await,
        &["does not speak HTTPS", "http://"],
    );
    server.abort();
}
