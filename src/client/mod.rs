//! The mesh client: what generated tonic clients send through.
//!
//! [`Channel`] is the one type every caller holds: a cloneable, boxed gRPC
//! transport. [`MeshClient::channel`] returns the Consul-resolved, routed,
//! balanced, retrying one: per target service one watch of its discovery
//! chain (routers, splitters, resolvers: [`routing`]), and per chain target
//! one endpoint watch and balancer, shared by every clone; [`direct`] makes
//! one from a plain tonic channel (the benchmark baseline). Code such as
//! `orders` does not change with the transport under it:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh::client::{ClientOptions, MeshClient};
//! use mesh::proto::payments::v1::payments_client::PaymentsClient;
//!
//! let mesh = MeshClient::new(discovery::ConsulConfig::from_env()?, ClientOptions::default());
//! let mut payments = PaymentsClient::new(mesh.channel("payments"));
//! # Ok(()) }
//! ```

mod attempt;
mod call;
mod collector;
mod connector;
mod dispatch;
mod eject;
mod endpoint;
pub(crate) mod error;
mod failfast;
mod instrument;
mod live;
mod metrics;
mod options;
mod retry;
mod route;
pub mod routing;
mod shared;
mod stack;
mod targets;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use discovery::{ConsulConfig, Resolver};
use tonic::body::Body;
use tonic::Status;
use tower::{util::BoxCloneSyncService, BoxError, ServiceExt};

pub use connector::{connect_endpoint, endpoint_channel, peer_certificate};
pub use error::{
    never_reached_server_status, DeadlineExceeded, NoHealthyEndpoint, NotConnected, PerTryTimeout,
    TargetRefused, Unroutable,
};
pub use live::{ChainView, TargetView};
pub use metrics::{TargetCounts, TargetMetrics};
pub use options::ClientOptions;
pub use targets::TargetHealth;

/// A gRPC transport that generated clients accept (`UsersClient::new(channel)`).
///
/// Its error type is the concrete `tonic::Status` (the status the caller
/// sees), not a boxed `dyn Error`: tonic keeps it as it is, and futures of
/// generated clients over it stay provably `Send` inside handlers.
pub type Channel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Status>;

/// Wraps a plain tonic channel (one address, no balancing, no retries): the
/// `--direct` baseline of the benchmarks, and a building block of tests.
pub fn direct(channel: tonic::transport::Channel) -> Channel {
    BoxCloneSyncService::new(channel.map_err(|error| Status::from_error(BoxError::from(error))))
}

/// The process's entry to the mesh: per target service one discovery-chain
/// watch and routing table, per chain target one endpoint watch and
/// balancer, created on first use and shared by every clone.
#[derive(Clone)]
pub struct MeshClient {
    shared: Arc<Shared>,
}

struct Shared {
    consul: ConsulConfig,
    options: ClientOptions,
    targets: Mutex<HashMap<String, Target>>,
}

#[derive(Clone)]
struct Target {
    channel: Channel,
    routing: Arc<live::ServiceRouting>,
    metrics: TargetMetrics,
}

impl MeshClient {
    /// A client that resolves through the Consul agent at `consul`.
    pub fn new(consul: ConsulConfig, options: ClientOptions) -> Self {
        let client = Self {
            shared: Arc::new(Shared {
                consul,
                options,
                targets: Mutex::default(),
            }),
        };
        collector::track(&client);
        client
    }

    fn target(&self, service: &str) -> Target {
        let mut targets = self.shared.targets.lock().expect("targets lock");
        targets
            .entry(service.to_owned())
            .or_insert_with(|| {
                let options = &self.shared.options;
                let metrics = TargetMetrics::default();
                let routing = live::ServiceRouting::start(
                    &self.shared.consul,
                    service,
                    options,
                    metrics.clone(),
                );
                let channel = stack::build(routing.clone(), options, metrics.clone());
                Target {
                    channel,
                    routing,
                    metrics,
                }
            })
            .clone()
    }

    /// The routed, balanced, retrying channel to `service` (a Consul service
    /// name). Must be called inside a tokio runtime.
    pub fn channel(&self, service: &str) -> Channel {
        self.target(service).channel
    }

    /// The Consul watch of `service`'s instances as a whole (no subset
    /// filter): the one its default chain target balances over.
    pub fn resolver(&self, service: &str) -> Resolver {
        self.target(service).routing.default_resolver()
    }

    /// The counters of `service`'s channel.
    pub fn metrics(&self, service: &str) -> TargetMetrics {
        self.target(service).metrics
    }

    /// `service`'s routing now: the table compiled from its discovery chain
    /// and each chain target's health and counts.
    pub fn chain(&self, service: &str) -> ChainView {
        self.target(service).routing.view()
    }

    /// Calls sent so far (first attempts) to each target of `service`'s
    /// routing table in force, by Consul target ID (cheap: for polling).
    pub fn chain_target_requests(&self, service: &str) -> std::collections::BTreeMap<String, u64> {
        self.target(service)
            .routing
            .live()
            .map(|live| {
                live.targets
                    .iter()
                    .map(|stack| {
                        let requests = stack
                            .counters
                            .requests
                            .load(std::sync::atomic::Ordering::Relaxed);
                        (stack.spec.id.clone(), requests)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every target service used so far, with its counters and the Consul
    /// watches of its chain targets.
    pub fn targets(&self) -> Vec<(String, Vec<Resolver>, TargetMetrics)> {
        let targets = self.shared.targets.lock().expect("targets lock");
        let mut list: Vec<_> = targets
            .iter()
            .map(|(name, target)| {
                let resolvers = target
                    .routing
                    .live()
                    .map(|live| {
                        let mut resolvers: Vec<Resolver> = Vec::new();
                        for stack in &live.targets {
                            if !resolvers
                                .iter()
                                .any(|known| known.same_watch(&stack.resolver))
                            {
                                resolvers.push(stack.resolver.clone());
                            }
                        }
                        resolvers
                    })
                    .unwrap_or_default();
                (name.clone(), resolvers, target.metrics.clone())
            })
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }
}
