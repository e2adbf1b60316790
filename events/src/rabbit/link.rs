//! One AMQP connection per broker handle, opened on first use and again
//! after it breaks, with a publisher channel in confirm mode and the
//! topology of each topic declared once per connection.

use std::{collections::HashSet, sync::Arc, time::Duration};

use lapin::{
    options::{
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    protocol::{AMQPErrorKind, AMQPSoftError},
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable, LongString, ShortString},
    uri::AMQPUri,
    Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind,
};
use tokio::sync::Mutex;

use super::{names, NAME};
use crate::{error::BrokerError, settings::BrokerSettings};

/// How long connecting (TCP, TLS, AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared connection of a [`super::RabbitBroker`].
#[derive(Clone)]
pub(crate) struct Link {
    uri: AMQPUri,
    tls: Option<String>,
    retention: Duration,
    state: Arc<Mutex<Option<Open>>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("host", &self.uri.authority.host)
            .field("port", &self.uri.authority.port)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

struct Open {
    connection: Connection,
    publisher: Channel,
    topics: HashSet<String>,
}

impl Link {
    pub(crate) fn new(settings: &BrokerSettings) -> Result<Self, BrokerError> {
        let mut uri: AMQPUri = settings.url.as_str().parse().map_err(|error: String| {
            BrokerError::NotConfigured(format!("invalid AMQP URL: {error}"))
        })?;
        if let Some(password) = &settings.password {
            uri.authority.userinfo.password = password.expose().to_owned();
        }
        let tls = settings
            .ca_pem
            .as_ref()
            .map(|pem| String::from_utf8_lossy(pem).into_owned());
        Ok(Self {
            uri,
            tls,
            retention: settings.retention,
            state: Arc::new(Mutex::new(None)),
        })
    }

    pub(crate) fn retention(&self) -> Duration {
        self.retention
    }

    async fn connect(&self) -> Result<Connection, BrokerError> {
        let runtime = lapin::runtime::default_runtime()
            .map_err(|error| BrokerError::unavailable(NAME, error))?;
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: self.tls.clone(),
        };
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("mesh-{}", std::process::id())));
        let connect =
            Connection::connect_uri_with_config(self.uri.clone(), properties, tls, runtime);
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                BrokerError::unavailable(NAME, format!("no connection within {CONNECT_TIMEOUT:?}"))
            })?
            .map_err(|error| BrokerError::unavailable(NAME, error))
    }

    /// The open connection, opening it if needed.
    async fn open(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Open>, BrokerError> {
        let mut state = self.state.lock().await;
        let usable = state.as_ref().is_some_and(|open| {
            open.connection.status().connected() && open.publisher.status().connected()
        });
        if !usable {
            if let Some(old) = state.take() {
                let _ = old
                    .connection
                    .close(200, ShortString::from("reconnecting"))
                    .await;
            }
            let connection = self.connect().await?;
            let publisher = connection
                .create_channel()
                .await
                .map_err(|error| BrokerError::unavailable(NAME, error))?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|error| BrokerError::unavailable(NAME, error))?;
            declare_exchanges(&publisher).await?;
            *state = Some(Open {
                connection,
                publisher,
                topics: HashSet::new(),
            });
        }
        Ok(tokio::sync::MutexGuard::map(state, |state| {
            state.as_mut().expect("opened above")
        }))
    }

    /// The publisher channel (confirm mode), with `topic`'s exchange and log
    /// declared.
    pub(crate) async fn publisher(&self, topic: &str) -> Result<Channel, BrokerError> {
        let mut open = self.open().await?;
        if !open.topics.contains(topic) {
            declare_log(&open.connection, topic, self.retention).await?;
            open.topics.insert(topic.to_owned());
        }
        Ok(open.publisher.clone())
    }

    /// A new channel on the connection (for a consumer or a passive check).
    pub(crate) async fn channel(&self) -> Result<Channel, BrokerError> {
        let open = self.open().await?;
        open.connection
            .create_channel()
            .await
            .map_err(|error| BrokerError::unavailable(NAME, error))
    }

    /// A channel for one short exchange, to be closed after.
    pub(crate) async fn scratch_channel(&self) -> Result<Channel, BrokerError> {
        self.channel().await
    }

    /// Declares `topic`'s log (idempotent), on a channel of its own.
    pub(crate) async fn declare_topic(&self, topic: &str) -> Result<(), BrokerError> {
        let mut open = self.open().await?;
        if !open.topics.contains(topic) {
            declare_log(&open.connection, topic, self.retention).await?;
            open.topics.insert(topic.to_owned());
        }
        Ok(())
    }

    /// Maps a failed operation to an error, dropping the connection when the
    /// failure means it (or its channel) is unusable.
    pub(crate) fn lost(&self, error: lapin::Error) -> BrokerError {
        if error.is_amqp_soft_error() {
            return BrokerError::refused(NAME, "an operation", error);
        }
        self.forget();
        BrokerError::unavailable(NAME, error)
    }

    /// Drops the connection; the next operation opens a new one.
    pub(crate) fn forget(&self) {
        if let Ok(mut state) = self.state.try_lock() {
            *state = None;
        }
    }
}

/// Whether `error` is RabbitMQ's 404 NOT_FOUND (a passive declare of a
/// queue that does not exist).
pub(crate) fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// Whether `error` is 406 PRECONDITION_FAILED (a declare whose arguments
/// differ from the existing queue's).
pub(crate) fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

async fn declare_exchanges(channel: &Channel) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for (exchange, kind) in [
        (names::EXCHANGE, ExchangeKind::Topic),
        (names::DEAD_LETTER_EXCHANGE, ExchangeKind::Direct),
    ] {
        channel
            .exchange_declare(
                ShortString::from(exchange),
                kind,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|error| BrokerError::refused(NAME, "declaring the exchanges", error))?;
    }
    Ok(())
}

/// Declares `queue` with `arguments`; when it exists with other arguments
/// (e.g. another retention), keeps the existing one and says so.
pub(crate) async fn declare_queue(
    connection_of: &Link,
    queue: &str,
    arguments: FieldTable,
) -> Result<(), BrokerError> {
    let channel = connection_of.channel().await?;
    declare_queue_on(&channel, queue, arguments).await?;
    let _ = channel.close(200, ShortString::from("declared")).await;
    Ok(())
}

async fn declare_queue_on(
    channel: &Channel,
    queue: &str,
    arguments: FieldTable,
) -> Result<(), BrokerError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(ShortString::from(queue), durable, arguments)
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_precondition_failed(&error) => {
            tracing::warn!(%queue, "the queue exists with other arguments; keeping it as it is");
            Ok(())
        }
        Err(error) => Err(BrokerError::refused(NAME, "declaring a queue", error)),
    }
}

pub(crate) async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<(), BrokerError> {
    channel
        .queue_bind(
            ShortString::from(queue),
            ShortString::from(exchange),
            ShortString::from(routing_key),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|error| BrokerError::refused(NAME, "binding a queue", error))
}

pub(crate) fn text_argument(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The log of `topic` (see [`super::backfill`]), bound to it.
async fn declare_log(
    connection: &Connection,
    topic: &str,
    retention: Duration,
) -> Result<(), BrokerError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|error| BrokerError::unavailable(NAME, error))?;
    let log = names::log_queue(topic);
    let mut arguments = FieldTable::default();
    arguments.insert(ShortString::from("x-queue-type"), text_argument("classic"));
    arguments.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongLongInt(
            i64::try_from(retention.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
        ),
    );
    declare_queue_on(&channel, &log, arguments).await?;
    // A failed declare closes the channel: bind on a fresh one.
    let channel = if channel.status().connected() {
        channel
    } else {
        connection
            .create_channel()
            .await
            .map_err(|error| BrokerError::unavailable(NAME, error))?
    };
    bind(&channel, &log, names::EXCHANGE, topic).await?;
    let _ = channel.close(200, ShortString::from("declared")).await;
    Ok(())
}
