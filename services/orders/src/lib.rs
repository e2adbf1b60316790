//! The `orders` service (`mesh.orders.v1.Orders`): places orders with a saga
//! over users, inventory and payments, and owns only its own database
//! (orders and order lines).
//!
//! - [`domain`]: validation, the order status machine, derived ids;
//! - [`store`]: the orders database;
//! - [`saga`]: PlaceOrder and CancelOrder as recoverable sagas (the state
//!   machine is documented there), and the recovery loop;
//! - [`outbox`]: the events of final states, written in the state's
//!   transaction and published by a relay on every instance;
//! - [`grpc`]: the tonic service and the one mapping of errors to gRPC codes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod domain;
pub mod grpc;
pub mod outbox;
pub mod saga;
pub mod store;

use std::time::Duration;

use mesh::{
    limits::MAX_MESSAGE_BYTES,
    proto::orders::v1::orders_server::OrdersServer,
    server::{ExampleCall, Runnable, ServeError},
    service::ServiceIdentity,
};

/// The names this service is known by.
pub const IDENTITY: ServiceIdentity = ServiceIdentity::grpc(
    "orders",
    mesh::proto::orders::v1::orders_server::SERVICE_NAME,
    50054,
);

/// The service as a program: what its binary and `mesh serve orders` run.
pub const SERVICE: Runnable = Runnable {
    identity: &IDENTITY,
    serve: |args| Box::pin(mesh::server::serve_args(&IDENTITY, args, run)),
    example: Some(ExampleCall {
        method: "PlaceOrder",
        body: r#"{"request_id":"{request_id}","user_id":"{user_id}","items":[{"sku":"{sku}","quantity":1}]}"#,
    }),
};

/// The largest request orders decodes. A valid order is at most 100 lines
/// of 128-character SKUs (about 60 KiB even in 4-byte characters), and an
/// order of some thousand lines still gets its readable INVALID_ARGUMENT;
/// anything larger is refused with RESOURCE_EXHAUSTED ("decoded message
/// length too large") before it is decoded, so a 4 MiB request of millions
/// of empty lines costs no memory.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// The schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The `orders` binary's flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "orders", version, about = "The mesh's orders service.")]
pub struct Config {
    /// Flags every service takes.
    #[command(flatten)]
    pub service: mesh::config::ServiceArgs,

    /// Longest a single call to users, inventory or payments may take
    /// (shorter when the incoming request's deadline is nearer).
    #[arg(value_name = "DURATION", long = "upstream-timeout", alias = "upstream-timeout-ms", env = "MESH_UPSTREAM_TIMEOUT_MS", default_value = "2s",
          value_parser = mesh::config::duration::positive_millis)]
    pub upstream_timeout: Duration,

    /// How long a saga run holds an order without renewing its lease
    /// (renewed before each remote step; raised to 3 × the upstream timeout
    /// if shorter). After a crash, another run takes the order over once
    /// this has passed.
    #[arg(value_name = "DURATION", long = "saga-lease", alias = "saga-lease-ms", env = "MESH_SAGA_LEASE_MS", default_value = "10s",
          value_parser = mesh::config::duration::positive_millis)]
    pub saga_lease: Duration,

    /// How often the recovery loop looks for unfinished orders (PENDING,
    /// CANCELLING) and drives them to a final state. An order whose
    /// upstreams are reachable is final within about
    /// lease + interval + 4 × upstream timeout.
    #[arg(value_name = "DURATION", long = "recovery-interval", alias = "recovery-interval-ms", env = "MESH_RECOVERY_INTERVAL_MS", default_value = "1s",
          value_parser = mesh::config::duration::positive_millis)]
    pub recovery_interval: Duration,

    /// How long inventory keeps an order's reservation if orders neither
    /// commits nor releases it (the backstop for lost bookkeeping).
    #[arg(value_name = "DURATION", long = "reservation-ttl", alias = "reservation-ttl-ms", env = "MESH_RESERVATION_TTL_MS", default_value = "15m",
          value_parser = mesh::config::duration::positive_millis)]
    pub reservation_ttl: Duration,

    /// How long a user that users said exists is taken as existing without
    /// asking users again: a customer's next orders skip that call. Users
    /// cannot be deleted; a user not found is always asked about again.
    /// `0` asks users for every new order.
    #[arg(value_name = "DURATION", long = "known-user-ttl", env = "MESH_KNOWN_USER_TTL", default_value = "5m",
          value_parser = mesh::config::duration::millis)]
    pub known_user_ttl: Duration,

    /// A fixed address for `users` instead of resolving it through Consul
    /// (debugging, or a deployment without Consul). Default: the mesh client.
    #[arg(long, env = "MESH_USERS_ADDR")]
    pub users_addr: Option<http::uri::Authority>,

    /// A fixed address for `inventory` instead of Consul.
    #[arg(long, env = "MESH_INVENTORY_ADDR")]
    pub inventory_addr: Option<http::uri::Authority>,

    /// A fixed address for `payments` instead of Consul.
    #[arg(long, env = "MESH_PAYMENTS_ADDR")]
    pub payments_addr: Option<http::uri::Authority>,

    /// `on`: an order's final state (CONFIRMED, REJECTED, CANCELLED) and its
    /// event are written in one transaction, and the relay publishes the
    /// event to the broker. `off`: no events (a deployment without
    /// consumers, or the benchmark's baseline).
    #[arg(long = "events", env = "MESH_EVENTS", value_enum, default_value_t = Switch::On)]
    pub events: Switch,

    /// Where the events go (the broker URL, or the broker in Consul).
    #[command(flatten)]
    pub broker: events::BrokerArgs,

    /// How long a relay holds an order's events: from the commit that
    /// records them (that unit leases the order to its own instance's
    /// relay) until they are published; after a relay died, another
    /// instance publishes them once it ran out.
    #[arg(value_name = "DURATION", long = "outbox-lease", env = "MESH_OUTBOX_LEASE", default_value = "30s",
          value_parser = mesh::config::duration::parser(mesh::config::duration::BareUnit::Seconds, Duration::from_millis(100)))]
    pub outbox_lease: Duration,

    /// How often the relay looks for events left behind (a commit wakes it
    /// at once otherwise).
    #[arg(value_name = "DURATION", long = "outbox-sweep", env = "MESH_OUTBOX_SWEEP", default_value = "1s",
          value_parser = mesh::config::duration::parser(mesh::config::duration::BareUnit::Seconds, Duration::from_millis(10)))]
    pub outbox_sweep: Duration,

    /// Test-only: pause between an event's commit and its publish.
    #[arg(value_name = "DURATION", long = "fault-pause-before-publish", env = "MESH_FAULT_PAUSE_BEFORE_PUBLISH", hide = true,
          value_parser = mesh::config::duration::millis)]
    pub pause_before_publish: Option<Duration>,

    /// Test-only: pause between the broker's confirmation and the removal
    /// of the published events from the outbox.
    #[arg(value_name = "DURATION", long = "fault-pause-after-publish", env = "MESH_FAULT_PAUSE_AFTER_PUBLISH", hide = true,
          value_parser = mesh::config::duration::millis)]
    pub pause_after_publish: Option<Duration>,
}

/// On or off.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

impl mesh::config::ServiceConfig for Config {
    fn service_args(&self) -> &mesh::config::ServiceArgs {
        &self.service
    }
}

impl Config {
    /// The outbox relay's pacing from the flags.
    pub fn relay_options(&self) -> outbox::RelayOptions {
        outbox::RelayOptions {
            sweep_every: self.outbox_sweep,
            pause_before_publish: self.pause_before_publish,
            pause_after_publish: self.pause_after_publish,
            ..outbox::RelayOptions::default()
        }
    }

    /// The saga's timing from the flags.
    pub fn saga_options(&self) -> saga::SagaOptions {
        saga::SagaOptions {
            per_call: self.upstream_timeout,
            lease: self.saga_lease,
            reservation_ttl: self.reservation_ttl,
            recovery_interval: self.recovery_interval,
            known_user_ttl: self.known_user_ttl,
        }
    }
}

/// The services orders calls, as mesh transports.
#[derive(Clone)]
pub struct Upstreams {
    /// `users`.
    pub users: mesh::client::Channel,
    /// `inventory`.
    pub inventory: mesh::client::Channel,
    /// `payments`.
    pub payments: mesh::client::Channel,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

/// Serves orders until SIGTERM/SIGINT, calling users, inventory
/// and payments through the mesh client (Consul-resolved, balanced,
/// retrying), or directly where a fixed address was given.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let upstreams = Upstreams::from_config(&config)?;
    run_with(config, upstreams).await
}

impl Upstreams {
    /// One shared mesh client for the three upstreams; `--<service>-addr`
    /// replaces a service's Consul resolution by a plain channel.
    pub fn from_config(config: &Config) -> Result<Self, ServeError> {
        let consul = config.service.consul.config()?;
        // With --mtls=required the calls present orders' Connect identity (the
        // same certificate watch as the server's) and accept only the target's.
        let identity = match config.service.mtls {
            mesh::config::MtlsMode::Required => {
                Some(mesh::connect::Identity::watch(&consul, IDENTITY.name))
            }
            mesh::config::MtlsMode::Off => None,
        };
        let options = mesh::client::ClientOptions {
            identity,
            ..mesh::client::ClientOptions::default()
        };
        let mesh = mesh::client::MeshClient::new(consul, options.clone());
        let channel = |service: &str, fixed: &Option<http::uri::Authority>| match fixed {
            Some(address) => {
                tracing::info!(%service, %address, "calling a fixed address instead of resolving through Consul");
                let channel = mesh::client::endpoint_channel(address.as_str(), service, &options)
                    .expect("an authority makes a valid http URI");
                mesh::client::direct(channel)
            }
            None => mesh.channel(service),
        };
        Ok(Self {
            users: channel("users", &config.users_addr),
            inventory: channel("inventory", &config.inventory_addr),
            payments: channel("payments", &config.payments_addr),
        })
    }
}

/// Serves orders, calling `upstreams`, until SIGTERM/SIGINT.
pub async fn run_with(config: Config, upstreams: Upstreams) -> Result<(), ServeError> {
    config
        .broker
        .check()
        .map_err(|error| ServeError::Settings(Box::new(error)))?;
    let bound = mesh::server::bind(&IDENTITY, &config.service).await?;
    let pool = bound.open_storage(&MIGRATOR).await?;
    let (store, _relay) = match config.events {
        Switch::Off => (store::Store::new(pool)?, None),
        Switch::On => {
            let wake = outbox::Wake::new(
                format!("{}-{}", bound.instance_id(), uuid::Uuid::new_v4().simple()),
                config.outbox_lease,
            );
            let store = store::Store::with_outbox(pool, wake.clone())?;
            let relay =
                outbox::Relay::new(outbox::Table::over(&store), wake, config.relay_options());
            let consul = if config.service.no_consul {
                None
            } else {
                Some(config.service.consul.config()?)
            };
            let broker = config.broker.clone();
            let task = tokio::spawn(relay.run(move || {
                let broker = broker.clone();
                let consul = consul.clone();
                async move { events::connect(&events::locate(&broker, consul.as_ref()).await?) }
            }));
            (store, Some(AbortOnDrop(task)))
        }
    };
    let saga = saga::Saga::new(store, upstreams, config.saga_options());
    let recovery = saga.spawn_recovery();
    let _stop_recovery = AbortOnDrop(recovery);
    let handler = grpc::OrdersService::new(saga, config.upstream_timeout);
    bound
        .serve(
            OrdersServer::new(handler)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .await
}

/// Aborts the task when dropped (the server stopped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
