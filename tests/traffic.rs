//! Traffic management from Consul's discovery chain, end to end: a real
//! Consul 1.8.7 agent with the config entries the project ships
//! (`deploy/consul/config/`), real `inventory` processes registered as
//! version v1 (two) and v2 (one), and the mesh client. What instances
//! served is counted on the servers (`grpc_server_handled_total`).
//!
//! One agent and one set of instances for every step (they run in order):
//! the canary header, a 90/10 split, moving the split under load, failing
//! over when v2 stops and back when it returns, a route's timeout, and
//! entries Consul accepts but gRPC cannot use. A second test runs against an
//! agent with ACLs default-deny: a route to a service the token may not read
//! fails clearly and never fails over.
//!
//! `MESH_TRAFFIC_SHIFTS` (default 4) sets how many split moves are timed.

mod common;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use common::Outcomes;
use mesh::{
    client::{routing::RoutingTable, Channel, ClientOptions, MeshClient},
    proto::inventory::v1::{inventory_client::InventoryClient, AddStockRequest, GetItemRequest},
};
use testkit::{free_port, scrape_metrics, ConsulAgent, ServiceOptions, ServiceProcess};

const SKU: &str = "CANARY-1";
const GET_ITEM: &str = "GetItem";
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/consul/config");

/// One inventory instance and the version it registered.
struct Instance {
    process: ServiceProcess,
    metrics: String,
    version: &'static str,
}

/// The agent, the instances, their shared database.
struct Canary {
    agent: ConsulAgent,
    instances: Vec<Instance>,
    data_dir: tempfile::TempDir,
}

impl Canary {
    /// The agent with the shipped entries, then v1, v1, v2.
    fn start() -> Self {
        let mut canary = Self {
            agent: ConsulAgent::start(),
            instances: Vec::new(),
            data_dir: tempfile::tempdir().expect("temp dir"),
        };
        for file in [
            "service-defaults-users.json",
            "service-defaults-inventory.json",
            "service-defaults-payments.json",
            "service-defaults-orders.json",
            "inventory-resolver.json",
            "inventory-splitter.json",
            "inventory-router.json",
        ] {
            canary.write(file);
        }
        for version in ["v1", "v1", "v2"] {
            canary.add(version, Vec::new());
        }
        canary
    }

    /// Writes a shipped config entry, as `consul config write` does.
    fn write(&self, file: &str) {
        let body = std::fs::read_to_string(Path::new(CONFIG).join(file)).expect("shipped entry");
        self.write_json(&body);
    }

    fn write_json(&self, body: &str) {
        self.agent
            .put_text("/v1/config", body)
            .unwrap_or_else(|error| panic!("config write {body}: {error}"));
    }

    /// Starts one instance registered with `version` and waits until it passes.
    fn add(&mut self, version: &'static str, extra: Vec<String>) {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "--metrics-listen".to_owned(),
            metrics.clone(),
            "--check-interval".to_owned(),
            "500".to_owned(),
            "--version-meta".to_owned(),
            version.to_owned(),
        ];
        args.extend(extra);
        let process = ServiceProcess::start(
            "inventory",
            ServiceOptions {
                consul: Some(self.agent.http_addr()),
                data_dir: Some(self.data_dir.path().to_owned()),
                // Clients' watches converge while a stopping instance still serves.
                drain: Some(Duration::from_secs(2)),
                args,
                ..ServiceOptions::default()
            },
        );
        self.instances.push(Instance {
            process,
            metrics,
            version,
        });
        self.agent
            .wait_passing("inventory", self.instances.len(), Duration::from_secs(30));
    }

    /// GetItem calls served by the instances of `version` (live ones).
    fn served(&self, version: &str) -> f64 {
        tokio::task::block_in_place(|| {
            self.instances
                .iter()
                .filter(|instance| instance.version == version)
                .map(|instance| {
                    scrape_metrics(&instance.metrics)
                        .sum("grpc_server_handled_total", &[("grpc_method", GET_ITEM)])
                })
                .sum()
        })
    }

    fn client(&self) -> MeshClient {
        let consul =
            discovery::ConsulConfig::new(&self.agent.http_addr(), None).expect("consul address");
        MeshClient::new(consul, ClientOptions::default())
    }
}

type Inventory = InventoryClient<Channel>;

async fn get_item(
    client: &Inventory,
    headers: &[(&'static str, &'static str)],
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(GetItemRequest { sku: SKU.into() });
    for (name, value) in headers {
        request
            .metadata_mut()
            .insert(*name, value.parse().expect("metadata"));
    }
    client.clone().get_item(request).await.map(drop)
}

/// The table's `[v1 %, v2 %]` at its splitter.
fn split_of(table: &RoutingTable) -> Option<[f64; 2]> {
    let (_, branches) = table.splitters().into_iter().next()?;
    let by_subset = |subset: &str| {
        branches
            .iter()
            .find(|(_, resolver)| {
                let target = table.resolvers()[*resolver].targets[0];
                table.targets()[target].subset == subset
            })
            .map_or(0.0, |(percent, _)| *percent)
    };
    Some([by_subset("v1"), by_subset("v2")])
}

/// Waits (bounded) until the client's table splits `[v1 %, v2 %]`.
async fn wait_split(mesh: &MeshClient, expected: [f64; 2]) {
    wait_table(mesh, &format!("a {expected:?} split"), |table| {
        split_of(table) == Some(expected)
    })
    .await;
}

/// Waits (bounded) until the client's table for inventory meets `taken`.
async fn wait_table(mesh: &MeshClient, what: &str, taken: impl Fn(&RoutingTable) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = mesh.chain("inventory");
        if view.table.as_ref().is_some_and(&taken) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {view:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Background GetItem load until stopped; counts every outcome.
struct Load {
    running: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Outcomes>>,
}

impl Load {
    fn start(client: &Inventory, workers: usize) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let workers = (0..workers)
            .map(|_| {
                let (client, running) = (client.clone(), running.clone());
                tokio::spawn(async move {
                    let mut outcomes = Outcomes::default();
                    while running.load(Ordering::Relaxed) {
                        outcomes.record(get_item(&client, &[]).await);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    outcomes
                })
            })
            .collect();
        Self { running, workers }
    }

    async fn stop(self) -> Outcomes {
        self.running.store(false, Ordering::Relaxed);
        let mut total = Outcomes::default();
        for worker in self.workers {
            total.add(worker.await.expect("load worker"));
        }
        total
    }
}

/// The WARN lines the mesh client logged in this process.
fn warnings() -> &'static Mutex<Vec<u8>> {
    static CAPTURED: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let buffer: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Capture(buffer))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("one subscriber per test binary");
        buffer
    })
}

struct Capture(&'static Mutex<Vec<u8>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        std::io::stderr().write_all(bytes)?;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(text: &str) -> usize {
    String::from_utf8_lossy(&warnings().lock().unwrap())
        .matches(text)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_is_routed_split_shifted_and_failed_over_live() {
    warnings();
    let mut canary = tokio::task::block_in_place(Canary::start);
    let mesh = canary.client();
    let inventory = InventoryClient::new(mesh.channel("inventory"));
    inventory
        .clone()
        .add_stock(AddStockRequest {
            sku: SKU.into(),
            quantity: 1,
            unit_price_cents: 100,
            currency: "EUR".into(),
        })
        .await
        .expect("AddStock (to v1: the split is 100/0)");
    wait_split(&mesh, [100.0, 0.0]).await;

    the_canary_header_always_reaches_v2(&canary, &inventory).await;
    a_90_10_split_sends_a_tenth_to_v2(&canary, &mesh, &inventory).await;
    moving_the_split_under_load_fails_no_call(&canary, &mesh, &inventory).await;
    stopping_every_v2_instance_fails_over_to_v1_and_back(&mut canary, &mesh, &inventory).await;
    a_route_timeout_caps_the_callers_deadline(&mut canary, &mesh, &inventory).await;
    unusable_entries_are_reported_once_and_the_rest_routes(&canary, &mesh, &inventory).await;
}

async fn the_canary_header_always_reaches_v2(canary: &Canary, inventory: &Inventory) {
    let (v1, v2) = (canary.served("v1"), canary.served("v2"));
    for _ in 0..300 {
        get_item(inventory, &[("x-canary", "1")])
            .await
            .expect("canary call");
    }
    assert_eq!(canary.served("v2") - v2, 300.0, "every canary call on v2");
    assert_eq!(canary.served("v1") - v1, 0.0);
    for _ in 0..100 {
        get_item(inventory, &[("x-canary", "0")])
            .await
            .expect("plain call");
    }
    assert_eq!(canary.served("v1") - v1, 100.0, "100/0: the rest on v1");
    assert_eq!(canary.served("v2") - v2, 300.0);
}

async fn a_90_10_split_sends_a_tenth_to_v2(
    canary: &Canary,
    mesh: &MeshClient,
    inventory: &Inventory,
) {
    canary.write("splits/inventory-90-10.json");
    wait_split(mesh, [90.0, 10.0]).await;
    let (v1, v2) = (canary.served("v1"), canary.served("v2"));
    let client = inventory.clone();
    let outcomes = common::drive(10_000, 16, move |_| {
        let client = client.clone();
        Box::pin(async move { get_item(&client, &[]).await })
    })
    .await;
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");
    let (to_v1, to_v2) = (canary.served("v1") - v1, canary.served("v2") - v2);
    assert_eq!(to_v1 + to_v2, 10_000.0);
    let share = to_v2 / 10_000.0;
    eprintln!(
        "90/10 split: v1 {to_v1}, v2 {to_v2} ({:.2} %)",
        share * 100.0
    );
    assert!((0.08..=0.12).contains(&share), "v2 took {share}");
}

async fn moving_the_split_under_load_fails_no_call(
    canary: &Canary,
    mesh: &MeshClient,
    inventory: &Inventory,
) {
    let shifts: usize = std::env::var("MESH_TRAFFIC_SHIFTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(4);
    let to_v2 = ("splits/inventory-0-100.json", "v2.inventory.default.dc1");
    let to_v1 = ("splits/inventory-100-0.json", "v1.inventory.default.dc1");
    // Alternate, ending on 0/100 (ready for the failover step), each move a real one.
    let moves: Vec<_> = (0..shifts)
        .map(|n| if (shifts - n) % 2 == 1 { to_v2 } else { to_v1 })
        .collect();
    if moves.first() == Some(&to_v2) {
        canary.write(to_v1.0);
        wait_split(mesh, [100.0, 0.0]).await;
    } else {
        canary.write(to_v2.0);
        wait_split(mesh, [0.0, 100.0]).await;
    }
    let load = Load::start(inventory, 8);
    let mut taken = Vec::new();
    for (file, to) in moves {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = mesh
            .chain_target_requests("inventory")
            .get(to)
            .copied()
            .unwrap_or(0);
        let written = Instant::now();
        tokio::task::block_in_place(|| canary.write(file));
        loop {
            if mesh
                .chain_target_requests("inventory")
                .get(to)
                .copied()
                .unwrap_or(0)
                > before
            {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(15),
                "{file} never took effect"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        taken.push(written.elapsed());
    }
    let outcomes = load.stop().await;
    taken.sort();
    eprintln!(
        "{} split moves under load: write → first call on the new subset p50 {:?}, max {:?}; {outcomes:?}",
        taken.len(),
        taken[taken.len() / 2],
        taken[taken.len() - 1]
    );
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");
    assert!(outcomes.ok > 0);
}

async fn stopping_every_v2_instance_fails_over_to_v1_and_back(
    canary: &mut Canary,
    mesh: &MeshClient,
    inventory: &Inventory,
) {
    wait_split(mesh, [0.0, 100.0]).await;
    let load = Load::start(inventory, 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v1_before = canary.served("v1");
    let v2_at = canary
        .instances
        .iter()
        .position(|instance| instance.version == "v2")
        .expect("a v2 instance");
    let mut stopped = canary.instances.remove(v2_at);
    tokio::task::block_in_place(|| {
        stopped.process.child.terminate();
        stopped
            .process
            .child
            .wait(Duration::from_secs(20))
            .expect("v2 stops after its drain");
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(canary.served("v1") > v1_before, "v1 took v2's calls");
    let failovers = mesh
        .chain("inventory")
        .targets
        .iter()
        .find(|target| target.spec.subset == "v2")
        .map(|target| target.failovers)
        .unwrap_or_default();
    assert!(failovers > 0, "counted as failovers of v2");

    // A new v2: calls go back to it.
    tokio::task::block_in_place(|| canary.add("v2", Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while canary.served("v2") == 0.0 {
        assert!(Instant::now() < deadline, "calls never went back to v2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcomes = load.stop().await;
    eprintln!("failover to v1 and back: {outcomes:?}");
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");
}

async fn a_route_timeout_caps_the_callers_deadline(
    canary: &mut Canary,
    mesh: &MeshClient,
    inventory: &Inventory,
) {
    tokio::task::block_in_place(|| {
        canary.add("slow", vec!["--inject-latency".to_owned(), "3s".to_owned()])
    });
    canary.write_json(
        &serde_json::json!({
            "Kind": "service-resolver", "Name": "inventory", "DefaultSubset": "v1",
            "Subsets": {
                "v1": {"Filter": "Service.Meta.version == \"v1\"", "OnlyPassing": true},
                "v2": {"Filter": "Service.Meta.version == \"v2\"", "OnlyPassing": true},
                "slow": {"Filter": "Service.Meta.version == \"slow\""},
            },
        })
        .to_string(),
    );
    canary.write_json(
        &serde_json::json!({
            "Kind": "service-router", "Name": "inventory",
            "Routes": [
                {"Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "1"}]}},
                 "Destination": {"ServiceSubset": "v2"}},
                {"Match": {"HTTP": {"Header": [{"Name": "x-slow", "Present": true}]}},
                 "Destination": {"ServiceSubset": "slow", "RequestTimeout": "300ms"}},
            ],
        })
        .to_string(),
    );
    wait_table(mesh, "the router with the timeout route", |table| {
        table.routes().len() == 3
    })
    .await;
    let mut request = tonic::Request::new(GetItemRequest { sku: SKU.into() });
    request.set_timeout(Duration::from_secs(10));
    request
        .metadata_mut()
        .insert("x-slow", "1".parse().unwrap());
    let started = Instant::now();
    let status = inventory
        .clone()
        .get_item(request)
        .await
        .expect_err("the slow subset answers after 3 s, the route allows 300 ms");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        elapsed < Duration::from_millis(2500),
        "{elapsed:?}: the route's 300 ms applied"
    );
    get_item(inventory, &[("x-canary", "1")])
        .await
        .expect("the other routes still work");
}

async fn unusable_entries_are_reported_once_and_the_rest_routes(
    canary: &Canary,
    mesh: &MeshClient,
    inventory: &Inventory,
) {
    // The router first: the resolver below drops the subset the old router used.
    canary.write_json(&serde_json::json!({
        "Kind": "service-router", "Name": "inventory",
        "Routes": [
            {"Match": {"HTTP": {"PathPrefix": "/mesh.inventory.v1.Inventory/", "QueryParam": [{"Name": "debug", "Present": true}]}},
             "Destination": {"ServiceSubset": "v2"}},
            {"Match": {"HTTP": {"PathPrefix": "/mesh.inventory.v1.Inventory/", "Methods": ["GET"]}},
             "Destination": {"ServiceSubset": "v2"}},
            {"Match": {"HTTP": {"PathPrefix": "/mesh.inventory.v1.Inventory/",
                                "Header": [{"Name": "x-canary", "Exact": "1"}]}},
             "Destination": {"ServiceSubset": "v2", "PrefixRewrite": "/elsewhere/"}},
        ],
    }).to_string());
    canary.write_json(
        &serde_json::json!({
            "Kind": "service-resolver", "Name": "inventory", "DefaultSubset": "v1",
            "Subsets": {
                "v1": {"Filter": "Service.Meta.version == \"v1\"", "OnlyPassing": true},
                "v2": {"Filter": "Service.Meta.version == \"v2\"", "OnlyPassing": true},
            },
            "Failover": {"v2": {"ServiceSubset": "v1"}, "v1": {"Datacenters": ["dc2"]}},
        })
        .to_string(),
    );
    wait_table(mesh, "four unusable parts", |table| {
        table.unusable().len() == 4
    })
    .await;
    // Another chain with the same unusable parts: nothing logged again.
    canary.write("splits/inventory-90-10.json");
    wait_split(mesh, [90.0, 10.0]).await;
    for expected in [
        "route 1 never matches a gRPC call (query parameter",
        "route 2 never matches a gRPC call (methods [\"GET\"]",
        "route 3: PrefixRewrite",
        "failover to v1.inventory.default.dc2 skipped",
    ] {
        assert_eq!(
            logged(expected),
            1,
            "{expected:?} logged once:\n{}",
            String::from_utf8_lossy(&warnings().lock().unwrap())
        );
    }
    // The rest of the chain works: the canary route (rewrite ignored) and the split.
    let v2 = canary.served("v2");
    for _ in 0..50 {
        get_item(inventory, &[("x-canary", "1")])
            .await
            .expect("canary route");
    }
    assert_eq!(canary.served("v2") - v2, 50.0);
    let client = inventory.clone();
    let outcomes = common::drive(500, 8, move |_| {
        let client = client.clone();
        Box::pin(async move { get_item(&client, &[]).await })
    })
    .await;
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");
}

/// With ACLs default-deny, a route to a service the client's token may not
/// read: Consul answers its health query with an empty list, and the client
/// must not take that for "no instance" and fail over — the call fails with
/// PERMISSION_DENIED naming the missing rule; the rest of the chain works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_route_to_a_service_the_token_may_not_read_is_refused_not_failed_over() {
    let agent = tokio::task::block_in_place(ConsulAgent::start_secure);
    agent.create_policy(
        "mesh-inventory",
        include_str!("../deploy/consul/acl/inventory.hcl"),
    );
    agent.create_policy(
        "inventory-reader",
        "service \"inventory\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }",
    );
    let inventory_token = agent.create_token("inventory", &["mesh-inventory"]);
    let reader = agent.create_token("inventory reader", &["inventory-reader"]);
    let ca = agent.ca_file().expect("a secure agent has a CA").to_owned();
    let metrics = format!("127.0.0.1:{}", free_port());
    let _instance = ServiceProcess::start(
        "inventory",
        ServiceOptions {
            consul: Some(agent.url()),
            args: vec![
                "--metrics-listen".into(),
                metrics.clone(),
                "--check-interval".into(),
                "500".into(),
            ],
            env: vec![
                ("CONSUL_CACERT".into(), ca.display().to_string()),
                ("CONSUL_HTTP_TOKEN".into(), inventory_token.secret.clone()),
            ],
            ..ServiceOptions::default()
        },
    );
    agent.wait_passing("inventory", 1, Duration::from_secs(30));
    // legacy exists and passes; the reader's token just may not see it.
    agent
        .put_text(
            "/v1/agent/service/register",
            &serde_json::json!({
                "ID": "legacy-1", "Name": "legacy", "Address": "127.0.0.1", "Port": free_port(),
                "Check": {"CheckID": "legacy-ttl", "TTL": "10m", "Status": "passing"},
            })
            .to_string(),
        )
        .expect("register legacy");
    for entry in [
        serde_json::json!({"Kind": "service-defaults", "Name": "inventory", "Protocol": "grpc"}),
        serde_json::json!({"Kind": "service-defaults", "Name": "legacy", "Protocol": "grpc"}),
        // Were legacy "empty", its calls would fail over to inventory.
        serde_json::json!({"Kind": "service-resolver", "Name": "legacy",
                           "Failover": {"*": {"Service": "inventory"}}}),
        serde_json::json!({"Kind": "service-router", "Name": "inventory", "Routes": [
            {"Match": {"HTTP": {"Header": [{"Name": "x-legacy", "Exact": "1"}]}},
             "Destination": {"Service": "legacy"}}]}),
    ] {
        agent
            .put_text("/v1/config", &entry.to_string())
            .unwrap_or_else(|error| panic!("{entry}: {error}"));
    }

    let consul = discovery::ConsulSettings {
        address: Some(agent.url()),
        ca_file: Some(ca),
        token: Some(reader.secret.clone()),
        ..discovery::ConsulSettings::default()
    }
    .build()
    .expect("secure config");
    let mesh = MeshClient::new(consul, ClientOptions::default());
    let inventory = InventoryClient::new(mesh.channel("inventory"));
    wait_table(&mesh, "the router", |table| table.router().is_some()).await;
    let served = || {
        tokio::task::block_in_place(|| {
            scrape_metrics(&metrics).sum("grpc_server_handled_total", &[("grpc_method", GET_ITEM)])
        })
    };
    // Unknown SKU: NOT_FOUND from the server is an answer, and it is counted.
    let answered = |result: Result<(), tonic::Status>| match result {
        Ok(()) => true,
        Err(status) => status.code() == tonic::Code::NotFound,
    };
    assert!(
        answered(get_item(&inventory, &[]).await),
        "inventory itself answers"
    );
    let before = served();
    for _ in 0..5 {
        let status = get_item(&inventory, &[("x-legacy", "1")])
            .await
            .expect_err("the token may not read legacy");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(r#"service:read on "legacy""#),
            "names the missing rule: {status:?}"
        );
    }
    assert_eq!(served(), before, "no call failed over to inventory");
    let legacy = mesh
        .chain("inventory")
        .targets
        .into_iter()
        .find(|target| target.spec.service == "legacy")
        .expect("legacy is a target");
    assert_eq!(legacy.health, mesh::client::TargetHealth::Refused);
    assert!(
        answered(get_item(&inventory, &[]).await),
        "the rest of the chain works"
    );
}
