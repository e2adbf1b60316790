//! What the live-connection hardening tests share: a real `payments` process
//! serving Connect mTLS (its Consul address may be a fault proxy in front of
//! the real agent), a caller identity from the real agent, single HTTP/2
//! connections to the mesh port, and paced (open-loop) calls whose latencies
//! are compared by their medians.
#![allow(dead_code)] // each test file uses a part

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use mesh::{
    client::{connect_endpoint, ClientOptions},
    connect::Identity,
};
use testkit::{free_port, ConsulAgent, ServiceOptions, ServiceProcess};
use tonic::transport::Channel;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// A `payments` instance with Connect mTLS whose Consul address is `consul`
/// (the agent, or a proxy in front of it), with metrics on a free port, the
/// extra `args` and `env`, serving. Returns it and its metrics address.
pub fn payments(consul: &str, args: &[&str], env: &[(&str, &str)]) -> (ServiceProcess, String) {
    let (mut process, metrics) = spawn_payments(consul, args, env);
    process.wait_serving(Duration::from_secs(60));
    (process, metrics)
}

/// [`payments`], started without waiting for it to serve.
pub fn spawn_payments(
    consul: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ServiceProcess, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut flags = vec!["--metrics-listen".to_owned(), metrics.clone()];
    flags.extend(args.iter().map(|arg| (*arg).to_owned()));
    let process = ServiceProcess::spawn(
        "payments",
        ServiceOptions {
            consul: Some(consul.to_owned()),
            mtls: true,
            args: flags,
            env: env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ..ServiceOptions::default()
        },
    );
    (process, metrics)
}

/// `name`'s Connect certificate from `agent` (directly, never through a proxy), ready.
pub async fn identity(agent: &ConsulAgent, name: &str) -> Identity {
    let consul = discovery::ConsulConfig::new(&agent.http_addr(), None).expect("consul address");
    let identity = Identity::watch(&consul, name);
    identity
        .ready(Duration::from_secs(20))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    identity
}

/// One HTTP/2 connection to `address` (a payments mesh port) as `identity`,
/// handshake done. It reconnects by itself after a close.
///
/// A handshake that fails (the agent's Connect CA may still be settling
/// right after it started) is tried again for up to 20 s.
pub async fn dial(address: &str, identity: &Identity) -> Channel {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match try_dial(address, identity).await {
            Ok(channel) => return channel,
            Err(error) if tokio::time::Instant::now() >= deadline => {
                panic!("the TLS handshake succeeds: {error:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// [`dial`], returning the error.
pub async fn try_dial(
    address: &str,
    identity: &Identity,
) -> Result<Channel, tonic::transport::Error> {
    let options = ClientOptions {
        identity: Some(identity.clone()),
        connect_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    connect_endpoint(address, "payments", &options).await
}

/// `grpc.health.v1.Health/Check` over `channel` — served by the mesh port
/// behind the same connection guard as the application, without touching a
/// database — within `limit`.
pub async fn check(channel: &Channel, limit: Duration) -> Result<Duration, tonic::Status> {
    let started = std::time::Instant::now();
    let mut client = HealthClient::new(channel.clone());
    match tokio::time::timeout(limit, client.check(HealthCheckRequest::default())).await {
        Ok(Ok(_)) => Ok(started.elapsed()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {limit:?}"
        ))),
    }
}

/// `count` health checks over `channel`, one started every `every` whether
/// or not the previous ones answered (open loop, as independent callers
/// would), each bounded by `limit`: their outcomes in start order.
pub async fn paced_checks(
    channel: &Channel,
    count: usize,
    every: Duration,
    limit: Duration,
) -> Vec<Result<Duration, tonic::Status>> {
    let mut calls = Vec::with_capacity(count);
    let mut ticks = tokio::time::interval(every);
    for _ in 0..count {
        ticks.tick().await;
        let channel = channel.clone();
        calls.push(tokio::spawn(async move { check(&channel, limit).await }));
    }
    let mut outcomes = Vec::with_capacity(count);
    for call in calls {
        outcomes.push(call.await.expect("call task"));
    }
    outcomes
}

/// The median latency of the calls (an unanswered call counts as
/// [`Duration::MAX`]), and the failures as "count × message".
pub fn median_and_failures(
    outcomes: &[Result<Duration, tonic::Status>],
) -> (Duration, Vec<String>) {
    let mut latencies: Vec<Duration> = outcomes
        .iter()
        .map(|outcome| outcome.clone().unwrap_or(Duration::MAX))
        .collect();
    latencies.sort();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for status in outcomes.iter().filter_map(|outcome| outcome.as_ref().err()) {
        *failures
            .entry(format!("{:?}: {}", status.code(), status.message()))
            .or_default() += 1;
    }
    let failures = failures
        .into_iter()
        .map(|(message, count)| format!("{count} × {message}"))
        .collect();
    let median = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or(Duration::MAX);
    (median, failures)
}

/// Workers calling in a loop until stopped, counting answers and failures
/// (each failure printed, and the distinct ones kept for the report).
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<BTreeMap<String, u64>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// What a [`Load`] saw.
#[derive(Debug)]
pub struct LoadOutcome {
    /// Calls answered.
    pub ok: u64,
    /// Calls failed.
    pub failed: u64,
    /// Each distinct failure ("code: message") and how often it came.
    pub failures: BTreeMap<String, u64>,
}

impl Load {
    /// Starts `workers` tasks, each running `call()` again as soon as it answers.
    pub fn start<F, Fut>(workers: usize, call: F) -> Self
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), tonic::Status>> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(BTreeMap::new()));
        let workers = (0..workers)
            .map(|_| {
                let (stop, ok, failures, call) =
                    (stop.clone(), ok.clone(), failures.clone(), call.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match call().await {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(status) => {
                                eprintln!("failed call: {status:?}");
                                let key = format!("{:?}: {}", status.code(), status.message());
                                *failures.lock().expect("failures").entry(key).or_insert(0) += 1;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            workers,
        }
    }

    /// Stops the workers and waits for their last calls.
    pub async fn stop(self) -> LoadOutcome {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        let failures = std::mem::take(&mut *self.failures.lock().expect("failures"));
        LoadOutcome {
            ok: self.ok.load(Ordering::Relaxed),
            failed: failures.values().sum(),
            failures,
        }
    }
}
