//! The users service (`mesh.users.v1.Users`): the shop's customer accounts.
//!
//! - [`domain`]: request validation and the rules (emails, names, page tokens);
//! - [`store`]: the SQL over `sqlx::AnyPool` (SQLite by default, PostgreSQL via
//!   `DATABASE_URL`);
//! - [`grpc`]: the tonic service, mapping errors to gRPC codes in one place.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod domain;
pub mod grpc;
pub mod store;

use mesh::{
    limits::MAX_MESSAGE_BYTES,
    proto::users::v1::users_server::UsersServer,
    server::{ExampleCall, Runnable, ServeError},
    service::ServiceIdentity,
};

/// The names this service is known by.
pub const IDENTITY: ServiceIdentity = ServiceIdentity::grpc(
    "users",
    mesh::proto::users::v1::users_server::SERVICE_NAME,
    50051,
);

/// The service as a program: what its binary and `mesh serve users` run.
pub const SERVICE: Runnable = Runnable {
    identity: &IDENTITY,
    serve: |args| Box::pin(mesh::server::serve_args(&IDENTITY, args, run)),
    example: Some(ExampleCall {
        method: "GetUser",
        body: r#"{"user_id":"{user_id}"}"#,
    }),
};

/// The schema, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The `users` binary's flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "users", version, about = "The users service of the mesh")]
pub struct Config {
    /// Flags every service takes.
    #[command(flatten)]
    pub service: mesh::config::ServiceArgs,
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
    let handler = grpc::UsersService::new(store::Store::new(pool)?);
    bound
        .serve(
            UsersServer::new(handler)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .await
}
