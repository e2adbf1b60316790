//! The `payments` service (`mesh.payments.v1.Payments`): charges users,
//! exactly once per idempotency key, and refunds captured charges.
//!
//! - [`domain`]: request validation and the deterministic decline rule;
//! - [`store`]: the payments table (idempotency enforced by a UNIQUE index, so
//!   that instances sharing one database never charge a key twice);
//! - [`grpc`]: the tonic service and the one mapping of errors to gRPC codes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod domain;
pub mod grpc;
pub mod store;

use mesh::{
    limits::MAX_MESSAGE_BYTES,
    proto::payments::v1::payments_server::PaymentsServer,
    server::{ExampleCall, Runnable, ServeError},
    service::ServiceIdentity,
};

/// The names this service is known by.
pub const IDENTITY: ServiceIdentity = ServiceIdentity::grpc(
    "payments",
    mesh::proto::payments::v1::payments_server::SERVICE_NAME,
    50053,
);

/// The service as a program: what its binary and `mesh serve payments` run.
pub const SERVICE: Runnable = Runnable {
    identity: &IDENTITY,
    serve: |args| Box::pin(mesh::server::serve_args(&IDENTITY, args, run)),
    example: Some(ExampleCall {
        method: "GetPayment",
        body: r#"{"payment_id":"no-such-payment"}"#,
    }),
};

/// The schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The `payments` binary's flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "payments", version, about = "The mesh's payments service.")]
pub struct Config {
    /// Flags every service takes.
    #[command(flatten)]
    pub service: mesh::config::ServiceArgs,

    /// Charges above this many cents are declined (recorded with status
    /// DECLINED and a reason): the deterministic stand-in for a card issuer.
    #[arg(
        long,
        env = "MESH_DECLINE_OVER_CENTS",
        default_value_t = 100_000,
        value_parser = clap::value_parser!(i64).range(0..)
    )]
    pub decline_over_cents: i64,

    /// A currency's own decline limit, `CUR=CENTS` (repeat the flag, or
    /// separate with commas); currencies not named use --decline-over-cents.
    #[arg(long = "decline-over", env = "MESH_DECLINE_OVER", value_delimiter = ',',
          value_parser = domain::parse_currency_limit)]
    pub decline_over: Vec<(String, i64)>,
}

impl Config {
    /// The decline limit of every currency.
    pub fn decline_limits(&self) -> domain::DeclineLimits {
        domain::DeclineLimits {
            default_cents: self.decline_over_cents,
            per_currency: self.decline_over.iter().cloned().collect(),
        }
    }
}

impl mesh::config::ServiceConfig for Config {
    fn service_args(&self) -> &mesh::config::ServiceArgs {
        &self.service
    }
}

/// Serves payments until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let bound = mesh::server::bind(&IDENTITY, &config.service).await?;
    let pool = bound.open_storage(&MIGRATOR).await?;
    let handler = grpc::PaymentsService::new(store::Store::new(pool)?, config.decline_limits());
    // Prometheus `payments_charges_total{outcome}`, read from the counters at each scrape.
    for outcome in ["created", "replayed"] {
        let counters = handler.counters();
        let read = move || match outcome {
            "created" => counters.created.load(std::sync::atomic::Ordering::Relaxed),
            _ => counters.replayed.load(std::sync::atomic::Ordering::Relaxed),
        };
        let (help, labels) = ("Charge calls, by outcome", [("outcome", outcome)]);
        mesh::telemetry::metrics::register_counter_fn("payments_charges", help, &labels, read);
    }
    bound
        .serve(
            PaymentsServer::new(handler)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .await
}
