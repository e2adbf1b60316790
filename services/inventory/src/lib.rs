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

use std::time::Duration;

use mesh::{
    limits::MAX_MESSAGE_BYTES,
    proto::inventory::v1::inventory_server::InventoryServer,
    server::{ExampleCall, Runnable, ServeError},
    service::ServiceIdentity,
};

/// The names this service is known by.
pub const IDENTITY: ServiceIdentity = ServiceIdentity::grpc(
    "inventory",
    mesh::proto::inventory::v1::inventory_server::SERVICE_NAME,
    50052,
);

/// The service as a program: what its binary and `mesh serve inventory` run.
pub const SERVICE: Runnable = Runnable {
    identity: &IDENTITY,
    serve: |args| Box::pin(mesh::server::serve_args(&IDENTITY, args, run)),
    example: Some(ExampleCall {
        method: "GetItem",
        body: r#"{"sku":"{sku}"}"#,
    }),
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
    #[arg(value_name = "DURATION", long = "reservation-ttl", alias = "reservation-ttl-ms", env = "MESH_RESERVATION_TTL_MS", default_value = "15m",
          value_parser = mesh::config::duration::positive_millis)]
    pub reservation_ttl: Duration,

    /// The longest TTL a Reserve may ask for (longer asks are cut to it).
    #[arg(value_name = "DURATION", long = "reservation-max-ttl", alias = "reservation-max-ttl-ms", env = "MESH_RESERVATION_MAX_TTL_MS", default_value = "1h",
          value_parser = mesh::config::duration::positive_millis)]
    pub reservation_max_ttl: Duration,

    /// How often expired reservations are released.
    #[arg(value_name = "DURATION", long = "reservation-sweep", alias = "reservation-sweep-ms", env = "MESH_RESERVATION_SWEEP_MS", default_value = "1s",
          value_parser = mesh::config::duration::positive_millis)]
    pub reservation_sweep: Duration,
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
    let store = store::Store::new(pool)?;
    let sweeper = tokio::spawn(release_expired(store.clone(), config.reservation_sweep));
    let handler = grpc::InventoryService::new(
        store,
        grpc::Ttl {
            default_ms: whole_millis(config.reservation_ttl),
            max_ms: whole_millis(config.reservation_max_ttl),
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
async fn release_expired(store: store::Store, period: Duration) {
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

/// `duration` in whole milliseconds, as the store counts them.
fn whole_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Aborts the task when dropped (the server stopped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
