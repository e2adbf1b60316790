//! The shipping service (`mesh.shipping.v1.Shipping`): shipments made from
//! the orders service's events, in its own database.
//!
//! - [`domain`]: request validation, shipment states, reading order events;
//! - [`store`]: shipments and the inbox (each event applied once, in its
//!   order's sequence, in one transaction with its inbox row);
//! - [`consume`]: the consumer group `shipping` on the topic `orders`;
//! - [`grpc`]: GetShipment, ListShipments, and the operator-only MarkShipped.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod consume;
pub mod domain;
pub mod grpc;
pub mod store;

use std::{sync::Arc, time::Duration};

use mesh::{
    limits::MAX_MESSAGE_BYTES,
    proto::shipping::v1::shipping_server::ShippingServer,
    server::{ExampleCall, Runnable, ServeError},
    service::{ServiceIdentity, ServiceKind},
};

/// The names this service is known by: a gRPC service over its own database
/// that consumes the broker's events.
pub const IDENTITY: ServiceIdentity = ServiceIdentity {
    name: "shipping",
    kind: ServiceKind::EventConsumer {
        grpc_service: mesh::proto::shipping::v1::shipping_server::SERVICE_NAME,
    },
    default_port: 50055,
};

/// The service as a program: what its binary and `mesh serve shipping` run.
pub const SERVICE: Runnable = Runnable {
    identity: &IDENTITY,
    serve: |args| Box::pin(mesh::server::serve_args(&IDENTITY, args, run)),
    // The demo user's shipments: the order the banner's PlaceOrder call
    // places shows up here once its event went through the broker.
    example: Some(ExampleCall {
        method: "ListShipments",
        body: r#"{"user_id":"{user_id}"}"#,
    }),
};

/// The schema, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The `shipping` binary's flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "shipping", version, about = "The shipping service of the mesh")]
pub struct Config {
    /// Flags every service takes.
    #[command(flatten)]
    pub service: mesh::config::ServiceArgs,

    /// Where the events come from.
    #[command(flatten)]
    pub broker: events::BrokerArgs,

    /// How long an event may stay delivered to an instance without an
    /// acknowledgement before another instance takes it over (Redis; on
    /// RabbitMQ a dead instance's events return when its connection closes).
    #[arg(value_name = "DURATION", long = "event-claim-idle", env = "MESH_EVENT_CLAIM_IDLE", default_value = "30s",
          value_parser = mesh::config::duration::parser(mesh::config::duration::BareUnit::Seconds, Duration::from_millis(100)))]
    pub claim_idle: Duration,

    /// Deliveries of one event (failed, or cut short by a crash) before it
    /// goes to the dead-letter stream or queue.
    #[arg(long = "event-max-deliveries", env = "MESH_EVENT_MAX_DELIVERIES", default_value_t = events::DEFAULT_MAX_DELIVERIES,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_deliveries: u32,

    /// Test-only: pause between an event's effect and its acknowledgement.
    #[arg(value_name = "DURATION", long = "fault-pause-before-ack", env = "MESH_FAULT_PAUSE_BEFORE_ACK", hide = true,
          value_parser = mesh::config::duration::millis)]
    pub pause_before_ack: Option<Duration>,
}

impl mesh::config::ServiceConfig for Config {
    fn service_args(&self) -> &mesh::config::ServiceArgs {
        &self.service
    }
}

/// Binds, opens the database, consumes the orders topic and serves until
/// SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), ServeError> {
    config
        .broker
        .check()
        .map_err(|error| ServeError::Settings(Box::new(error)))?;
    let bound = mesh::server::bind(&IDENTITY, &config.service).await?;
    let pool = bound.open_storage(&MIGRATOR).await?;
    let store = store::Store::new(pool);
    let consul = if config.service.no_consul {
        None
    } else {
        Some(config.service.consul.config()?)
    };
    let subscription = events::Subscription {
        claim_idle: config.claim_idle,
        max_deliveries: config.max_deliveries,
        ..events::Subscription::new(consume::TOPIC, consume::GROUP, &bound.instance_id())
    };
    let options = events::consumer::RunnerOptions {
        pause_before_ack: config.pause_before_ack,
        ..events::consumer::RunnerOptions::default()
    };
    let handler = Arc::new(consume::ShipmentsFromOrders::new(store.clone()));
    let consumer = tokio::spawn(consume_events(
        config.broker.clone(),
        consul,
        subscription,
        handler,
        options,
    ));
    let _stop_consuming = AbortOnDrop(consumer);
    bound
        .serve(
            ShippingServer::new(grpc::ShippingService::new(store))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .await
}

/// Finds the broker (the URL, else Consul; retrying while there is none),
/// then consumes until aborted.
async fn consume_events(
    broker: events::BrokerArgs,
    consul: Option<discovery::ConsulConfig>,
    subscription: events::Subscription,
    handler: Arc<consume::ShipmentsFromOrders>,
    options: events::consumer::RunnerOptions,
) {
    let mut pause = Duration::from_millis(200);
    let settings = loop {
        match events::locate(&broker, consul.as_ref()).await {
            Ok(settings) => break settings,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?pause, "no broker to consume from yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    };
    let broker = match events::connect(&settings) {
        Ok(broker) => broker,
        Err(error) => {
            tracing::error!(%error, "cannot use the broker; not consuming");
            return;
        }
    };
    tracing::info!(broker = %settings.url, "consuming the orders topic");
    let _running = events::consumer::spawn(broker, subscription, handler, options);
    std::future::pending::<()>().await;
}

/// Aborts the task when dropped (the server stopped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        // Flattened flag sets (service, Consul, broker) must not collide.
        super::Config::command().debug_assert();
    }
}
