//! The Redis Streams adapter (the default broker).
//!
//! - a topic is the stream `mesh.events.<topic>`; an event is one entry whose
//!   fields are the CloudEvents headers plus `data` (the body);
//! - publishing is `XADD`; the server must run with `appendonly yes` and
//!   `appendfsync always`, so that the reply means the entry is on disk
//!   (Redis 7.0 has no `WAITAOF`): [`RedisBroker::publish`] refuses a server
//!   configured otherwise, once per connection, with a clear error;
//! - a group is a stream consumer group created at `0` (a new group reads
//!   from the oldest retained entry); consumers read with `XREADGROUP`,
//!   acknowledge with `XACK`, and take over the deliveries of dead consumers
//!   with `XAUTOCLAIM` (see [`consume`]);
//! - dead letters go to the stream `mesh.events.<topic>.dead.<group>`;
//! - retention is applied by [`RedisBroker::maintain`] (see [`trim`]).

mod consume;
mod reply;
mod trim;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use redis::{aio::ConnectionManager, AsyncConnectionConfig, Client, IntoConnectionInfo, Value};

pub use consume::{RedisDeliveries, RedisReceipt};

use crate::{
    broker::{Backlog, Deliveries, EventBroker, Subscription},
    envelope::{headers, Event},
    error::BrokerError,
    settings::{BrokerKind, BrokerSettings},
};

const NAME: &str = "redis";

/// How long one command may take before the connection counts as lost.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The stream of `topic`.
pub fn stream_key(topic: &str) -> String {
    format!("mesh.events.{topic}")
}

/// The dead-letter stream of `group` on `topic`.
pub fn dead_letter_key(topic: &str, group: &str) -> String {
    format!("mesh.events.{topic}.dead.{group}")
}

/// A Redis server holding the topics as streams.
#[derive(Clone)]
pub struct RedisBroker {
    client: Client,
    control: ConnectionManager,
    retention: Duration,
    durability_checked: Arc<AtomicBool>,
    url: String,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.url)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// A broker for `settings` (connects lazily: a broker that is down now is
    /// not an error until it is used).
    pub fn new(settings: &BrokerSettings) -> Result<Self, BrokerError> {
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|error| BrokerError::NotConfigured(format!("invalid Redis URL: {error}")))?;
        if let Some(password) = &settings.password {
            info = info.clone().set_redis_settings(
                info.redis_settings()
                    .clone()
                    .set_password(password.expose()),
            );
        }
        let client = if settings.url.tls() {
            Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: settings.ca_pem.clone(),
                },
            )
        } else {
            Client::open(info)
        }
        .map_err(|error| BrokerError::NotConfigured(format!("invalid Redis settings: {error}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let control =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|error| {
                BrokerError::NotConfigured(format!("invalid Redis settings: {error}"))
            })?;
        Ok(Self {
            client,
            control,
            retention: settings.retention,
            durability_checked: Arc::new(AtomicBool::new(false)),
            url: settings.url.to_string(),
        })
    }

    pub(crate) async fn query(&self, command: &redis::Cmd) -> Result<Value, BrokerError> {
        query(&mut self.control.clone(), command).await
    }

    /// A connection of its own, for blocking reads (`XREADGROUP BLOCK` would
    /// hold up every other command on a shared one).
    async fn dedicated(
        &self,
        block: Duration,
    ) -> Result<redis::aio::MultiplexedConnection, BrokerError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT + block));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| classify(error, "connect"))
    }

    /// Refuses a server whose `XADD` reply would not mean "on disk".
    async fn check_durability(&self) -> Result<(), BrokerError> {
        if self.durability_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut settings = redis::cmd("CONFIG");
        settings.arg("GET").arg("append*");
        let reply = self.query(&settings).await?;
        let value = |name: &str| reply::field(&reply, name).and_then(reply::text);
        let appendonly = value("appendonly");
        let appendfsync = value("appendfsync");
        if appendonly.as_deref() != Some("yes") || appendfsync.as_deref() != Some("always") {
            return Err(BrokerError::Refused {
                broker: NAME,
                operation: "durable publishing",
                detail: format!(
                    "the server runs with appendonly {} and appendfsync {}: an XADD reply means \
                     the event is on disk only with appendonly yes and appendfsync always",
                    appendonly.as_deref().unwrap_or("?"),
                    appendfsync.as_deref().unwrap_or("?")
                ),
            });
        }
        self.durability_checked.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn ensure_group(&self, key: &str, group: &str) -> Result<(), BrokerError> {
        let mut create = redis::cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(key)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM");
        match query(&mut self.control.clone(), &create).await {
            Ok(_) => Ok(()),
            Err(BrokerError::Refused { detail, .. }) if detail.contains("BUSYGROUP") => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl EventBroker for RedisBroker {
    fn kind(&self) -> BrokerKind {
        BrokerKind::Redis
    }

    async fn publish(&self, topic: &str, event: &Event) -> Result<(), BrokerError> {
        self.check_durability().await?;
        added(self.query(&xadd(topic, event)).await)
    }

    async fn publish_batch(&self, topic: &str, events: &[&Event]) -> Vec<Result<(), BrokerError>> {
        if events.is_empty() {
            return Vec::new();
        }
        if let Err(error) = self.check_durability().await {
            return events.iter().map(|_| Err(error.clone())).collect();
        }
        let mut pipeline = redis::pipe();
        // Each XADD's own answer, an error reply included, not the first
        // error for all.
        pipeline.ignore_errors();
        for event in events {
            pipeline.add_command(xadd(topic, event));
        }
        match pipeline
            .query_async::<Vec<Value>>(&mut self.control.clone())
            .await
        {
            Ok(replies) if replies.len() == events.len() => replies
                .into_iter()
                .map(|reply| added(server_reply(reply)))
                .collect(),
            Ok(replies) => events
                .iter()
                .map(|_| {
                    Err(BrokerError::NotConfirmed {
                        broker: NAME,
                        detail: format!(
                            "{} replies to a pipeline of {} XADDs",
                            replies.len(),
                            events.len()
                        ),
                    })
                })
                .collect(),
            Err(error) => {
                let error = added(Err(classify(error, "a command")));
                events.iter().map(|_| error.clone()).collect()
            }
        }
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<Deliveries, BrokerError> {
        let key = stream_key(&subscription.topic);
        self.ensure_group(&key, &subscription.group).await?;
        let reader = self.dedicated(consume::BLOCK).await?;
        Ok(Deliveries::Redis(Box::new(RedisDeliveries::new(
            reader,
            self.control.clone(),
            subscription.clone(),
        ))))
    }

    async fn backlog(&self, topic: &str, group: &str) -> Result<Backlog, BrokerError> {
        let key = stream_key(topic);
        let mut info = redis::cmd("XINFO");
        info.arg("GROUPS").arg(&key);
        let groups = match self.query(&info).await {
            Ok(groups) => reply::groups_reply(&groups),
            // No stream yet: nothing published, nothing behind.
            Err(BrokerError::Refused { detail, .. }) if detail.contains("no such key") => {
                return Ok(Backlog::default())
            }
            Err(error) => return Err(error),
        };
        let Some(info) = groups.into_iter().find(|info| info.name == group) else {
            return Ok(Backlog::default());
        };
        let undelivered = match info.lag {
            Some(lag) => lag,
            None => {
                // Redis cannot tell after some deletions: count what is after
                // the last delivered entry (bounded).
                let mut range = redis::cmd("XRANGE");
                range
                    .arg(&key)
                    .arg(format!("({}", info.last_delivered))
                    .arg("+")
                    .arg("COUNT")
                    .arg(100_000);
                reply::array(&self.query(&range).await?).len() as u64
            }
        };
        Ok(Backlog {
            undelivered,
            unacknowledged: Some(info.pending),
        })
    }

    async fn dead_letter_count(&self, topic: &str, group: &str) -> Result<u64, BrokerError> {
        let mut len = redis::cmd("XLEN");
        len.arg(dead_letter_key(topic, group));
        let count = reply::int(&self.query(&len).await?).unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn maintain(&self, topic: &str) -> Result<(), BrokerError> {
        let key = stream_key(topic);
        let mut info = redis::cmd("XINFO");
        info.arg("GROUPS").arg(&key);
        let groups = match self.query(&info).await {
            Ok(groups) => reply::groups_reply(&groups),
            Err(BrokerError::Refused { detail, .. }) if detail.contains("no such key") => {
                return Ok(())
            }
            Err(error) => return Err(error),
        };
        let mut bounds = Vec::with_capacity(groups.len());
        for group in groups {
            let oldest = if group.pending > 0 {
                let mut pending = redis::cmd("XPENDING");
                pending.arg(&key).arg(&group.name);
                reply::oldest_pending(&self.query(&pending).await?)
            } else {
                None
            };
            bounds.push((group, oldest));
        }
        let now = mesh::storage::now_unix_ms().max(0) as u64;
        let retention = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
        let min_id = trim::min_id(&bounds, now, retention);
        let mut xtrim = redis::cmd("XTRIM");
        xtrim
            .arg(&key)
            .arg("MINID")
            .arg("=")
            .arg(min_id.to_string());
        let removed = reply::int(&self.query(&xtrim).await?).unwrap_or(0);
        if removed > 0 {
            tracing::info!(stream = %key, removed, %min_id, "trimmed events every group acknowledged");
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.query(&redis::cmd("PING")).await.map(drop)
    }
}

/// The `XADD` that appends `event` to `topic`'s stream.
fn xadd(topic: &str, event: &Event) -> redis::Cmd {
    let mut add = redis::cmd("XADD");
    add.arg(stream_key(topic)).arg("*");
    for (name, value) in event.headers() {
        add.arg(name).arg(value);
    }
    add.arg(headers::DATA).arg(event.data.as_ref());
    add
}

/// What an `XADD`'s reply means for its event.
fn added(reply: Result<Value, BrokerError>) -> Result<(), BrokerError> {
    match reply {
        Ok(Value::BulkString(_)) | Ok(Value::SimpleString(_)) => Ok(()),
        Ok(other) => Err(BrokerError::NotConfirmed {
            broker: NAME,
            detail: format!("unexpected XADD reply {other:?}"),
        }),
        // The command may have been applied before the connection broke.
        Err(BrokerError::Unavailable { detail, .. }) => Err(BrokerError::NotConfirmed {
            broker: NAME,
            detail,
        }),
        Err(error) => Err(error),
    }
}

/// Runs `command`, sorting failures into unreachable vs refused.
pub(crate) async fn query(
    connection: &mut (impl redis::aio::ConnectionLike + Send),
    command: &redis::Cmd,
) -> Result<Value, BrokerError> {
    match command.query_async::<Value>(connection).await {
        Ok(value) => server_reply(value),
        Err(error) => Err(classify(error, "a command")),
    }
}

/// A reply, or the error the server answered instead.
fn server_reply(value: Value) -> Result<Value, BrokerError> {
    match value {
        Value::ServerError(error) => Err(BrokerError::refused(
            NAME,
            "a command",
            error.details().unwrap_or("error"),
        )),
        value => Ok(value),
    }
}

fn classify(error: redis::RedisError, operation: &'static str) -> BrokerError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
    {
        BrokerError::unavailable(NAME, error)
    } else {
        BrokerError::refused(NAME, operation, error)
    }
}
