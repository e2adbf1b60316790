//! The inventory service (`mesh.inventory.v1.Inventory`): stock levels, and
//! reservations against them that are all-or-nothing and idempotent on their id.
//!
//! - [`domain`]: request validation and the rules (SKUs, quantities, states);
//! - [`store`]: the SQL over `sqlx::AnyPool` (SQLite by default, PostgreSQL via
//!   `DATABASE_URL`), each operation one transaction;
//! - [`grpc`]: the tonic service, mapping errors to gRPC codes in one place.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod domain;
pub mod grpc;
pub mod store;

use mesh::{
    proto::inventory::v1::inventory_server::InventoryServer,
    server::{ServeError, ServiceIdentity, MAX_MESSAGE_BYTES},
};

/// The names this service is known by.
pub const IDENTITY: ServiceIdentity = ServiceIdentity {
    name: "inventory",
    grpc_service: mesh::proto::inventory::v1::inventory_server::SERVICE_NAME,
    default_port: 50052,
};

/// The schema, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The `inventory` binary's flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "inventory",
    version,
    about = "The inventory service of the mesh"
)]
pub struct Config {
    /// Flags every service takes.
    #[command(flatten)]
    pub service: mesh::config::ServiceArgs,

    /// How long a reservation holds its stock when Reserve asks for no TTL.
    #[arg(long, env = "MESH_RESERVATION_TTL_MS", default_value_t = 15 * 60 * 1000,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub reservation_ttl_ms: i64,

    /// The longest TTL a Reserve may ask for (longer asks are cut to it).
    #[arg(long, env = "MESH_RESERVATION_MAX_TTL_MS", default_value_t = 60 * 60 * 1000,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub reservation_max_ttl_ms: i64,

    /// How often expired reservations are released.
    #[arg(long, env = "MESH_RESERVATION_SWEEP_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub reservation_sweep_ms: u64,
}

impl mesh::config::ServiceConfig for Config {
    fn service_args(&self) -> &mesh::config::ServiceArgs {
        &self.service
    }
}

/// Binds, opens the database, and serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let bound = mesh::server::bind(&IDENTITY, &config.service).await?;
    let pool = bound.open_storage(&MIGRATOR).await?;
    let store = store::Store::new(pool);
    let sweeper = tokio::spawn(release_expired(
        store.clone(),
        std::time::Duration::from_millis(config.reservation_sweep_ms),
    ));
    let handler = grpc::InventoryService::new(
        store,
        grpc::Ttl {
            default_ms: config.reservation_ttl_ms,
            max_ms: config.reservation_max_ttl_ms,
        },
    );
    let _stop_sweeper = AbortOnDrop(sweeper);
    bound
        .serve(
            InventoryServer::new(handler)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .await
}

/// Releases expired reservations every `period`, forever (the backstop for
/// a caller that never commits nor releases).
async fn release_expired(store: store::Store, period: std::time::Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store
            .release_expired(mesh::storage::now_unix_ms(), 100)
            .await
        {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "released expired reservations"),
            Err(error) => tracing::warn!(%error, "cannot release expired reservations now"),
        }
    }
}

/// Aborts the task when dropped (the server stopped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
