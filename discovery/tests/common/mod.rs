//! Helpers shared by the behaviour tests: a real gRPC health server for
//! Consul to check, registrations with fast checks, bounded waits.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use discovery::{
    ConsulConfig, Discover, Endpoint, GrpcCheck, RegistrarOptions, ResolverOptions,
    ServiceRegistration,
};
use futures::StreamExt;
use tonic_health::{server::HealthReporter, ServingStatus};
use tower::discover::Change;

/// `tonic_health`'s server on `<ip>:0`, reporting SERVING for one gRPC service.
pub struct HealthServer {
    pub addr: SocketAddr,
    pub reporter: HealthReporter,
    pub grpc_service: String,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    pub async fn start(ip: IpAddr, grpc_service: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .expect("bind the health server");
        let addr = listener.local_addr().expect("local addr");
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(grpc_service, ServingStatus::Serving)
            .await;
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .expect("health server");
        });
        Self {
            addr,
            reporter,
            grpc_service: grpc_service.to_owned(),
            task,
        }
    }

    pub async fn set(&self, status: ServingStatus) {
        self.reporter
            .set_service_status(&self.grpc_service, status)
            .await;
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A registration checked every second (Consul's minimum) with a 1 s timeout.
pub fn registration(id: &str, name: &str, server: &HealthServer) -> ServiceRegistration {
    let mut check = GrpcCheck::new(server.grpc_service.clone());
    check.interval = Duration::from_secs(1);
    check.timeout = Duration::from_secs(1);
    ServiceRegistration {
        id: id.to_owned(),
        name: name.to_owned(),
        address: server.addr.ip(),
        port: server.addr.port(),
        tags: vec!["test".to_owned()],
        meta: BTreeMap::from([
            ("version".to_owned(), "0.1.0".to_owned()),
            ("proto_package".to_owned(), "grpc.health.v1".to_owned()),
            ("instance".to_owned(), id.to_owned()),
        ]),
        check,
        connect_native: false,
    }
}

pub fn config(agent: &testkit::ConsulAgent) -> ConsulConfig {
    ConsulConfig::new(&agent.http_addr(), None).expect("config")
}

/// Anti-entropy every 500 ms, retries capped at 1 s: restarts are noticed fast.
pub fn registrar_options() -> RegistrarOptions {
    RegistrarOptions {
        anti_entropy_interval: Duration::from_millis(500),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
    }
}

/// Blocking waits of 3 s, retries capped at 1 s.
pub fn resolver_options() -> ResolverOptions {
    ResolverOptions {
        wait: Duration::from_secs(3),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        ..ResolverOptions::default()
    }
}

/// Runs blocking testkit code without starving the runtime's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The next change, or a panic after `timeout`.
pub async fn next_change(discover: &mut Discover, timeout: Duration) -> Change<String, Endpoint> {
    match tokio::time::timeout(timeout, discover.next()).await {
        Ok(Some(Ok(change))) => change,
        Ok(Some(Err(never))) => match never {},
        Ok(None) => panic!("the discover stream ended"),
        Err(_) => panic!("no change within {timeout:?}"),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn describe(change: &Change<String, Endpoint>) -> String {
    match change {
        Change::Insert(id, endpoint) => format!("+{id}@{}", endpoint.address),
        Change::Remove(id) => format!("-{id}"),
    }
}
