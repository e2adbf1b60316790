//! Prometheus metrics, scraped over HTTP and parsed as Prometheus does:
//!
//! - a real `users` process counts every RPC by method and status code
//!   (trailers-only errors and trailers alike), and Consul advertises the
//!   metrics port it really bound (`--metrics-listen 127.0.0.1:0`);
//! - the mesh client exports its per-target counters and its Consul view
//!   (endpoints, updates, errors, staleness), read at scrape time;
//! - retries, an empty retry budget and ejections show up per target;
//! - `payments` exports its charge outcomes.

use std::time::Duration;

use mesh::{
    client::{ClientOptions, MeshClient},
    proto::{
        payments::v1::{payments_client::PaymentsClient, ChargeRequest},
        users::v1::{
            users_client::UsersClient, CreateUserRequest, GetUserRequest, ListUsersRequest,
        },
    },
};
use testkit::{
    free_port, scrape_metrics, wait_until, ConsulAgent, Scrape, ServiceOptions, ServiceProcess,
};

/// Starts `name` registered in `agent`, with `--metrics-listen 127.0.0.1:0`.
fn start(name: &str, agent: &ConsulAgent) -> ServiceProcess {
    ServiceProcess::start(
        name,
        ServiceOptions {
            consul: Some(agent.http_addr()),
            args: vec![
                "--metrics-listen".into(),
                "127.0.0.1:0".into(),
                "--check-interval".into(),
                "500".into(),
            ],
            ..ServiceOptions::default()
        },
    )
}

/// The `metrics_port` Meta that `process` registered in Consul.
fn advertised_metrics_addr(agent: &ConsulAgent, process: &ServiceProcess) -> String {
    let id = format!("{}-{}", process.name, process.instance_id);
    let service = agent.get_json(&format!("/v1/agent/service/{id}"));
    let port = service["Meta"]["metrics_port"]
        .as_str()
        .unwrap_or_else(|| panic!("no Meta.metrics_port in {service}"));
    assert_ne!(
        port, "0",
        "the bound port is advertised, not the requested 0"
    );
    format!("127.0.0.1:{port}")
}

/// Scrapes without blocking the runtime's workers.
async fn scrape_async(address: String) -> Scrape {
    tokio::task::spawn_blocking(move || scrape_metrics(&address))
        .await
        .expect("scrape task")
}

async fn users_client(address: &str) -> UsersClient<tonic::transport::Channel> {
    UsersClient::connect(format!("http://{address}"))
        .await
        .expect("connect to users")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_counts_every_rpc_by_method_and_code_on_the_advertised_port() {
    let agent = ConsulAgent::start();
    let users = start("users", &agent);
    agent.wait_passing("users", 1, Duration::from_secs(30));
    let metrics = advertised_metrics_addr(&agent, &users);

    let mut client = users_client(&users.addr()).await;
    let user_id = client
        .create_user(CreateUserRequest {
            email: "ada@example.org".into(),
            display_name: "Ada".into(),
        })
        .await
        .expect("create user")
        .into_inner()
        .user_id;
    let mut not_found = 0;
    for i in 0..25 {
        let id = if i % 8 == 7 {
            format!("u_missing{i}")
        } else {
            user_id.clone()
        };
        match client.get_user(GetUserRequest { user_id: id }).await {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
                not_found += 1;
            }
        }
    }
    assert_eq!(not_found, 3);

    let scrape = scrape_async(metrics).await;
    let get = [
        ("grpc_service", "mesh.users.v1.Users"),
        ("grpc_method", "GetUser"),
    ];
    let with_code = |code| [get[0], get[1], ("grpc_code", code)];
    assert_eq!(scrape.sum("grpc_server_started_total", &get), 25.0);
    assert_eq!(
        scrape.sum("grpc_server_handled_total", &with_code("OK")),
        22.0
    );
    assert_eq!(
        scrape.sum("grpc_server_handled_total", &with_code("NOT_FOUND")),
        3.0
    );
    assert_eq!(scrape.sum("grpc_server_handled_total", &get), 25.0);
    assert_eq!(scrape.sum("grpc_server_handling_seconds_count", &get), 25.0);
    let create = [("grpc_method", "CreateUser"), ("grpc_code", "OK")];
    assert_eq!(scrape.sum("grpc_server_handled_total", &create), 1.0);
    // Methods not called yet are there at zero; health checks are not counted.
    assert_eq!(
        scrape.sum("grpc_server_started_total", &[("grpc_method", "ListUsers")]),
        0.0
    );
    assert_eq!(
        scrape.sum(
            "grpc_server_started_total",
            &[("grpc_service", "grpc.health.v1.Health")]
        ),
        0.0
    );
    assert_eq!(scrape.sum("grpc_server_started_total", &[]), 26.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_exports_its_counters_and_consul_view_per_target_and_endpoint() {
    let mut agent = ConsulAgent::start();
    let users = [start("users", &agent), start("users", &agent)];
    agent.wait_passing("users", 2, Duration::from_secs(30));
    let metrics = serve_process_metrics().await;

    let consul = discovery::ConsulConfig::new(&agent.http_addr(), None).expect("consul address");
    let mesh = MeshClient::new(
        consul,
        ClientOptions {
            watch_wait: Duration::from_secs(2),
            ..ClientOptions::default()
        },
    );
    let mut client = UsersClient::new(mesh.channel("users"));
    wait_until(
        "the client to see both instances",
        Duration::from_secs(20),
        || (mesh.resolver("users").snapshot().endpoints.len() == 2).then_some(()),
    );
    for _ in 0..20 {
        client
            .list_users(ListUsersRequest::default())
            .await
            .expect("ListUsers");
    }

    let target = [("target", "users")];
    let scrape = scrape_async(metrics.clone()).await;
    assert_eq!(scrape.sum("mesh_client_requests_total", &target), 20.0);
    assert_eq!(scrape.sum("mesh_client_failures_total", &target), 0.0);
    assert_eq!(scrape.sum("mesh_client_retries_total", &target), 0.0);
    assert_eq!(scrape.sum("mesh_client_endpoints", &target), 2.0);
    assert!(scrape.sum("mesh_client_discovery_updates_total", &target) >= 1.0);
    assert_eq!(
        scrape.sum("mesh_client_discovery_errors_total", &target),
        0.0
    );
    assert_eq!(scrape.sum("mesh_client_discovery_stale", &target), 0.0);
    // Every attempt is counted against the instance that served it.
    assert_eq!(
        scrape.sum("mesh_client_endpoint_requests_total", &target),
        20.0
    );
    let per_endpoint: f64 = users
        .iter()
        .map(|process| {
            let endpoint = process.addr();
            scrape.sum(
                "mesh_client_endpoint_requests_total",
                &[("target", "users"), ("endpoint", &endpoint)],
            )
        })
        .sum();
    assert_eq!(per_endpoint, 20.0);

    // Consul goes away: the client keeps its endpoints and says they are stale.
    agent.kill();
    let stale = wait_until(
        "the client to report Consul errors",
        Duration::from_secs(30),
        || {
            let scrape = scrape_metrics(&metrics);
            (scrape.sum("mesh_client_discovery_stale", &target) == 1.0).then_some(scrape)
        },
    );
    assert!(stale.sum("mesh_client_discovery_errors_total", &target) >= 1.0);
    assert_eq!(stale.sum("mesh_client_endpoints", &target), 2.0);
    client
        .list_users(ListUsersRequest::default())
        .await
        .expect("the last known endpoints still serve");
    let after = scrape_async(metrics).await;
    assert_eq!(after.sum("mesh_client_requests_total", &target), 21.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_exports_retries_an_empty_budget_and_ejections() {
    let agent = ConsulAgent::start();
    // Two registered instances nobody listens behind (no check: they pass).
    let dead: Vec<u16> = (0..2).map(|_| free_port()).collect();
    for (i, port) in dead.iter().enumerate() {
        agent
            .put_text(
                "/v1/agent/service/register",
                &format!(
                    r#"{{"ID":"ghost-{i}","Name":"ghost","Address":"127.0.0.1","Port":{port}}}"#
                ),
            )
            .expect("register a ghost instance");
    }
    let metrics = serve_process_metrics().await;
    let consul = discovery::ConsulConfig::new(&agent.http_addr(), None).expect("consul address");
    let mesh = MeshClient::new(
        consul,
        ClientOptions {
            default_deadline: Duration::from_millis(800),
            fail_fast_after: Duration::from_millis(100),
            eject_after_failures: 2,
            eject_min_backoff: Duration::from_secs(30),
            // About one retry per second: the budget runs dry at once.
            budget_ttl: Duration::from_secs(1),
            budget_min_per_sec: 1,
            budget_retry_ratio: 0.0,
            watch_wait: Duration::from_secs(2),
            ..ClientOptions::default()
        },
    );
    wait_until(
        "the client to see both ghosts",
        Duration::from_secs(20),
        || (mesh.resolver("ghost").snapshot().endpoints.len() == 2).then_some(()),
    );
    let mut client = UsersClient::new(mesh.channel("ghost"));
    for i in 0..12 {
        let status = client
            .get_user(GetUserRequest {
                user_id: format!("u_{i}"),
            })
            .await
            .expect_err("nobody answers");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    let target = [("target", "ghost")];
    let scrape = scrape_async(metrics).await;
    assert_eq!(scrape.sum("mesh_client_requests_total", &target), 12.0);
    assert_eq!(scrape.sum("mesh_client_failures_total", &target), 12.0);
    assert!(scrape.sum("mesh_client_retries_total", &target) >= 1.0);
    assert!(scrape.sum("mesh_client_retry_budget_exhausted_total", &target) >= 1.0);
    assert!(scrape.sum("mesh_client_ejections_total", &target) >= 1.0);
    assert!(scrape.sum("mesh_client_endpoint_requests_total", &target) >= 2.0);
    assert_eq!(scrape.sum("mesh_client_endpoints", &target), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_exports_created_and_replayed_charges() {
    let agent = ConsulAgent::start();
    let payments = start("payments", &agent);
    agent.wait_passing("payments", 1, Duration::from_secs(30));
    let metrics = advertised_metrics_addr(&agent, &payments);
    let mut client = PaymentsClient::connect(format!("http://{}", payments.addr()))
        .await
        .expect("connect to payments");
    for key in ["k1", "k2", "k1", "k1"] {
        client
            .charge(ChargeRequest {
                idempotency_key: key.into(),
                user_id: "u_metrics".into(),
                amount_cents: 1250,
                currency: "EUR".into(),
            })
            .await
            .expect("charge");
    }
    let scrape = scrape_async(metrics).await;
    assert_eq!(
        scrape.sum("payments_charges_total", &[("outcome", "created")]),
        2.0
    );
    assert_eq!(
        scrape.sum("payments_charges_total", &[("outcome", "replayed")]),
        2.0
    );
}

/// Serves this test process's registry (where the mesh client's metrics
/// live) on a free port, as a service does on `--metrics-listen`.
async fn serve_process_metrics() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind metrics");
    let address = listener.local_addr().expect("metrics address").to_string();
    tokio::spawn(mesh::telemetry::metrics::serve(listener));
    address
}
