//! Finding the broker: the URL when one is given, else the broker
//! registered in Consul like every other part of the mesh.
//!
//! The registration (what `mesh up` writes; see docs/EVENTS.md) is a Consul
//! service named [`CONSUL_SERVICE`] with a TCP check and `Meta.scheme` =
//! `redis`, `rediss`, `amqp` or `amqps`.

use std::time::Duration;

use discovery::{ConsulConfig, Resolver, ResolverOptions};

use crate::{
    broker::Broker,
    error::BrokerError,
    rabbit::RabbitBroker,
    redis::RedisBroker,
    settings::{BrokerArgs, BrokerKind, BrokerSettings, BrokerUrl},
};

/// The Consul service name the broker is registered as by default.
pub const CONSUL_SERVICE: &str = "mesh-broker";

/// How long one Consul lookup waits for its first answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The broker's settings: `--broker-url` when given, else the first passing
/// instance of `--broker-service` in Consul (`consul` may be `None` for a
/// service run without Consul: then a URL is required).
pub async fn locate(
    args: &BrokerArgs,
    consul: Option<&ConsulConfig>,
) -> Result<BrokerSettings, BrokerError> {
    let invalid =
        |error: crate::settings::SettingsError| BrokerError::NotConfigured(error.to_string());
    if let Some(url) = args.explicit_url().map_err(invalid)? {
        return args.settings_for(url).map_err(invalid);
    }
    let Some(consul) = consul else {
        return Err(BrokerError::NotConfigured(
            "no --broker-url (MESH_BROKER_URL) and no Consul to find one in".to_owned(),
        ));
    };
    let resolver = Resolver::spawn(
        consul.clone(),
        &args.service,
        ResolverOptions {
            wait: Duration::from_secs(1),
            ..ResolverOptions::default()
        },
    );
    let mut snapshots = resolver.subscribe();
    let snapshot = tokio::time::timeout(LOOKUP_TIMEOUT, async {
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            if snapshot.initialized || snapshot.last_error.is_some() {
                return snapshot;
            }
            if snapshots.changed().await.is_err() {
                return snapshot;
            }
        }
    })
    .await
    .map_err(|_| {
        BrokerError::NotConfigured(format!(
            "Consul did not answer for service {} within {LOOKUP_TIMEOUT:?}",
            args.service
        ))
    })?;
    if let Some(error) = &snapshot.last_error {
        if !snapshot.initialized {
            return Err(BrokerError::NotConfigured(format!(
                "cannot look the broker up in Consul: {error}"
            )));
        }
    }
    let endpoint = snapshot.endpoints.values().next().ok_or_else(|| {
        BrokerError::NotConfigured(format!(
            "no passing instance of {} in Consul and no --broker-url",
            args.service
        ))
    })?;
    let scheme = endpoint
        .meta
        .get("scheme")
        .map(String::as_str)
        .unwrap_or("redis");
    let (kind, tls) = match scheme {
        "redis" => (BrokerKind::Redis, false),
        "rediss" => (BrokerKind::Redis, true),
        "amqp" => (BrokerKind::RabbitMq, false),
        "amqps" => (BrokerKind::RabbitMq, true),
        other => {
            return Err(BrokerError::NotConfigured(format!(
                "{} in Consul has Meta.scheme {:?} (expected redis, rediss, amqp or amqps)",
                endpoint.id,
                crate::envelope::bounded(other, 40)
            )))
        }
    };
    let url = BrokerUrl::for_address(kind, tls, &endpoint.address.to_string());
    args.settings_for(url).map_err(invalid)
}

/// The adapter for `settings` (no I/O: it connects on first use).
pub fn connect(settings: &BrokerSettings) -> Result<Broker, BrokerError> {
    Ok(match settings.url.kind() {
        BrokerKind::Redis => Broker::Redis(RedisBroker::new(settings)?),
        BrokerKind::RabbitMq => Broker::RabbitMq(RabbitBroker::new(settings)?),
    })
}
