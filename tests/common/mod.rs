//! Fixtures shared by the mesh-client behaviour tests: a real Consul dev
//! agent, real `payments` processes registered in it, and a bounded load
//! driver that counts outcomes by gRPC code.
#![allow(dead_code)]

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use mesh::client::{ClientOptions, MeshClient};
use testkit::{free_port, scrape_metrics, wait_until, ConsulAgent, ServiceOptions, ServiceProcess};
use tokio::sync::Mutex;

/// One `payments` instance with its metrics address.
pub struct Instance {
    pub process: ServiceProcess,
    pub metrics: String,
}

impl Instance {
    /// `grpc_server_handled_total` of `method` on this instance.
    pub fn handled(&self, method: &str) -> f64 {
        scrape_metrics(&self.metrics).sum("grpc_server_handled_total", &[("grpc_method", method)])
    }
}

/// A Consul agent and `payments` instances sharing one data folder.
pub struct PaymentsMesh {
    pub agent: ConsulAgent,
    pub instances: Vec<Instance>,
    data_dir: tempfile::TempDir,
}

impl PaymentsMesh {
    /// Starts the agent and `count` instances, and waits until all pass.
    pub fn start(count: usize) -> Self {
        Self::start_with(&vec![Vec::new(); count])
    }

    /// Starts one instance per entry, each with those extra flags.
    pub fn start_with(flags: &[Vec<String>]) -> Self {
        let mut mesh = Self {
            agent: ConsulAgent::start(),
            instances: Vec::new(),
            data_dir: tempfile::tempdir().expect("temp dir"),
        };
        for extra in flags {
            mesh.add_instance(extra.clone());
        }
        mesh.agent
            .wait_passing("payments", flags.len(), Duration::from_secs(30));
        mesh
    }

    /// Starts one more instance (it registers itself).
    pub fn add_instance(&mut self, extra: Vec<String>) -> &Instance {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--metrics-listen".to_owned(), metrics.clone()];
        if !extra.iter().any(|flag| flag == "--check-interval") {
            args.extend(["--check-interval".to_owned(), "500".to_owned()]);
        }
        args.extend(extra);
        let process = ServiceProcess::start(
            "payments",
            ServiceOptions {
                consul: Some(self.agent.http_addr()),
                data_dir: Some(self.data_dir.path().to_owned()),
                args,
                ..ServiceOptions::default()
            },
        );
        self.instances.push(Instance { process, metrics });
        self.instances.last().expect("just pushed")
    }

    /// A mesh client resolving through this agent.
    pub fn client(&self, options: ClientOptions) -> MeshClient {
        let consul =
            discovery::ConsulConfig::new(&self.agent.http_addr(), None).expect("consul address");
        MeshClient::new(consul, options)
    }
}

/// Waits (bounded) until `client`'s resolver for `service` holds `count` endpoints.
pub async fn wait_endpoints(client: &MeshClient, service: &str, count: usize) {
    let mut snapshots = client.resolver(service).subscribe();
    tokio::time::timeout(Duration::from_secs(20), async {
        while snapshots.borrow_and_update().endpoints.len() != count {
            snapshots.changed().await.expect("resolver alive");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the resolver did not reach {count} endpoint(s) of {service}"));
}

/// Outcomes of a batch of calls, by gRPC code.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub messages: Vec<String>,
}

impl Outcomes {
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Counts one call's result (the first few error messages kept).
    pub fn record(&mut self, result: Result<(), tonic::Status>) {
        match result {
            Ok(()) => self.ok += 1,
            Err(status) => {
                *self
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                if self.messages.len() < 5 {
                    self.messages.push(status.message().to_owned());
                }
            }
        }
    }

    /// Adds another batch's counts.
    pub fn add(&mut self, other: Outcomes) {
        self.ok += other.ok;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        self.messages.extend(other.messages);
    }
}

/// Runs `total` calls made by `call(i)` with `concurrency` workers.
pub async fn drive<F, Fut>(total: usize, concurrency: usize, call: F) -> Outcomes
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, next, outcomes) = (call.clone(), next.clone(), outcomes.clone());
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if index >= total {
                        return;
                    }
                    let result = call(index).await;
                    outcomes.lock().await.record(result);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    let outcomes = outcomes.lock().await.clone();
    outcomes
}

/// Waits (bounded) until Consul shows `count` passing `service` instances.
pub fn wait_passing(agent: &ConsulAgent, service: &str, count: usize) {
    wait_until(
        &format!("{count} passing {service}"),
        Duration::from_secs(30),
        || (agent.passing_ids(service).len() == count).then_some(()),
    );
}

type Payments = mesh::proto::payments::v1::payments_client::PaymentsClient<mesh::client::Channel>;
type CallFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>>;

/// GetPayment as a boxed future (named types keep rustc's `Send` check simple).
pub fn get_payment(client: &Payments, payment_id: String) -> CallFuture {
    let mut client = client.clone();
    Box::pin(async move {
        client
            .get_payment(mesh::proto::payments::v1::GetPaymentRequest { payment_id })
            .await
            .map(|_| ())
    })
}

/// Charge as a boxed future.
pub fn charge(client: &Payments, request: mesh::proto::payments::v1::ChargeRequest) -> CallFuture {
    let mut client = client.clone();
    Box::pin(async move { client.charge(request).await.map(|_| ()) })
}
