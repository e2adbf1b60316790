//! Events through a real broker (docs/EVENTS.md, ADR 0012).
//!
//! - [`Event`]: one CloudEvents 1.0 event in binary content mode — the
//!   attributes as broker headers named as in the CloudEvents Kafka binding
//!   (`ce_id`, `ce_type`, …, `content-type`) plus W3C `traceparent`, the body
//!   as bytes;
//! - [`Broker`]: the one interface — publish with the broker's confirmation,
//!   consumer groups with acknowledgements, dead letters, backlog — over two
//!   real adapters, [`redis::RedisBroker`] (Redis Streams, the default) and
//!   [`rabbit::RabbitBroker`] (RabbitMQ quorum queues), chosen by the URL's
//!   scheme ([`BrokerUrl`]);
//! - [`BrokerArgs`]: the flags every publisher and consumer takes
//!   (`MESH_BROKER_URL`, credentials and CA from files), and [`locate`]: the
//!   broker from the URL, else from Consul (service [`CONSUL_SERVICE`]);
//! - [`consumer`]: runs a [`consumer::Handler`] over a group's deliveries —
//!   acknowledges what it applied, retries what failed, dead-letters what
//!   cannot be decoded or failed too often — with metrics and a span per
//!   event that continues the publisher's trace.
//!
//! Services that neither publish nor consume do not depend on this crate, so
//! they do not compile the Redis and AMQP clients.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod broker;
pub mod consumer;
mod envelope;
mod error;
mod locate;
pub mod rabbit;
pub mod redis;
mod settings;
pub mod text_body;
pub mod trace;

pub use broker::{
    Backlog, Broker, Deliveries, Delivery, EventBroker, Subscription, DEFAULT_MAX_DELIVERIES,
};
pub use envelope::{
    headers, Event, MalformedEvent, CONTENT_TYPE_PROTOBUF, MAX_ATTRIBUTE_BYTES, MAX_DATA_BYTES,
    MAX_TRACESTATE_BYTES, SPEC_VERSION,
};
pub use error::BrokerError;
pub use locate::{connect, locate, CONSUL_SERVICE};
pub use settings::{
    BrokerArgs, BrokerKind, BrokerSettings, BrokerUrl, SettingsError, DEFAULT_RETENTION,
};
