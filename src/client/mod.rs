//! The mesh client: what generated tonic clients send through.
//!
//! [`Channel`] is the one type every caller holds: a cloneable, boxed gRPC
//! transport. [`MeshClient::channel`] returns the Consul-resolved, balanced,
//! retrying one (one shared resolver and balancer per target service per
//! [`MeshClient`]); [`direct`] makes one from a plain tonic channel (the
//! benchmark baseline). Code such as `orders` does not change with the
//! transport under it:
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
mod eject;
pub(crate) mod error;
mod failfast;
mod instrument;
mod metrics;
mod options;
mod retry;
mod stack;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use discovery::{ConsulConfig, Resolver, ResolverOptions};
use tonic::body::Body;
use tonic::Status;
use tower::{util::BoxCloneSyncService, BoxError, ServiceExt};

pub use connector::{connect_endpoint, endpoint_channel, peer_certificate};
pub use error::{
    never_reached_server_status, DeadlineExceeded, NoHealthyEndpoint, NotConnected, PerTryTimeout,
};
pub use metrics::{TargetCounts, TargetMetrics};
pub use options::ClientOptions;

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

/// The process's entry to the mesh: one Consul watch and one balancer per
/// target service, created on first use and shared by every clone.
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
    resolver: Resolver,
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
                let resolver = Resolver::spawn(
                    self.shared.consul.clone(),
                    service,
                    ResolverOptions {
                        tag: options.tag.clone(),
                        wait: options.watch_wait,
                        connect: options.identity.is_some(),
                        ..ResolverOptions::default()
                    },
                );
                let metrics = TargetMetrics::default();
                let channel = stack::build(service, &resolver, options, metrics.clone());
                Target {
                    channel,
                    resolver,
                    metrics,
                }
            })
            .clone()
    }

    /// The balanced, retrying channel to `service` (a Consul service name).
    /// Must be called inside a tokio runtime.
    pub fn channel(&self, service: &str) -> Channel {
        self.target(service).channel
    }

    /// The Consul watch behind `service`'s channel.
    pub fn resolver(&self, service: &str) -> Resolver {
        self.target(service).resolver
    }

    /// The counters of `service`'s channel.
    pub fn metrics(&self, service: &str) -> TargetMetrics {
        self.target(service).metrics
    }

    /// Every target used so far, with its resolver and counters.
    pub fn targets(&self) -> Vec<(String, Resolver, TargetMetrics)> {
        let targets = self.shared.targets.lock().expect("targets lock");
        let mut list: Vec<_> = targets
            .iter()
            .map(|(name, target)| {
                (
                    name.clone(),
                    target.resolver.clone(),
                    target.metrics.clone(),
                )
            })
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }
}
