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

/// The names this service is known by (DESIGN §2).
pub const IDENTITY: ServiceIdentity = ServiceIdentity {
    name: "inventory",
    grpc_service: "mesh.inventory.v1.Inventory",
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
}

/// Binds, opens the database, and serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let bound = mesh::server::bind(&IDENTITY, &config.service).await?;
    let pool = mesh::storage::open(
        IDENTITY.name,
        config.service.database_url.as_deref(),
        &config.service.data_dir,
        &MIGRATOR,
    )
    .await?;
    let handler = grpc::InventoryService::new(store::Store::new(pool));
    bound
        .serve(
            InventoryServer::new(handler)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .await
}
