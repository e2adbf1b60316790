//! Which broker, and how to reach it: `MESH_BROKER_URL` (or the broker found
//! in Consul), the password from a file, a CA for TLS.
//!
//! The URL never carries the password: one given in it is refused, so it
//! cannot end up in a process list, a log line or a Consul registration.
//! `Debug` and `Display` of everything here print no secret.

use std::{fmt, path::PathBuf, time::Duration};

/// Events are kept at least this long by default: a week.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why the broker settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The URL does not parse or names no supported broker.
    #[error("invalid broker URL {url:?}: {reason}")]
    Url {
        /// The URL as given (without any password).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A password inside the URL.
    #[error("the broker URL carries a password: put it in a file and name the file with --broker-password-file (MESH_BROKER_PASSWORD_FILE) instead")]
    PasswordInUrl,
    /// A file named by a flag cannot be read.
    #[error("cannot read the broker {what} file {path}: {source}")]
    File {
        /// `password` or `CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Which broker a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Redis Streams (`redis://`, `rediss://`).
    Redis,
    /// RabbitMQ over AMQP 0-9-1 (`amqp://`, `amqps://`).
    RabbitMq,
}

impl BrokerKind {
    /// `redis` or `rabbitmq` (also the `messaging.system` of spans).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::RabbitMq => "rabbitmq",
        }
    }
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed broker URL without a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    url: String,
    kind: BrokerKind,
    tls: bool,
    username: Option<String>,
}

impl BrokerUrl {
    /// Parses `redis://`, `rediss://`, `amqp://` or `amqps://` URLs.
    pub fn parse(url: &str) -> Result<Self, SettingsError> {
        let invalid = |reason: &str| SettingsError::Url {
            url: crate::envelope::bounded(url, 200),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected redis://, rediss://, amqp:// or amqps://"))?;
        let (kind, tls) = match scheme {
            "redis" => (BrokerKind::Redis, false),
            "rediss" => (BrokerKind::Redis, true),
            "amqp" => (BrokerKind::RabbitMq, false),
            "amqps" => (BrokerKind::RabbitMq, true),
            _ => return Err(invalid("expected redis://, rediss://, amqp:// or amqps://")),
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let username = match userinfo {
            None => None,
            Some(userinfo) => {
                if userinfo.contains(':') {
                    return Err(SettingsError::PasswordInUrl);
                }
                Some(userinfo.to_owned()).filter(|name| !name.is_empty())
            }
        };
        Ok(Self {
            url: url.to_owned(),
            kind,
            tls,
            username,
        })
    }

    /// Redis or RabbitMQ.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// Whether the connection is TLS (`rediss`, `amqps`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The user named in the URL, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The URL (it holds no password).
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// A URL of `kind` for `host:port` (what Consul's registration gives).
    pub fn for_address(kind: BrokerKind, tls: bool, address: &str) -> Self {
        let scheme = match (kind, tls) {
            (BrokerKind::Redis, false) => "redis",
            (BrokerKind::Redis, true) => "rediss",
            (BrokerKind::RabbitMq, false) => "amqp",
            (BrokerKind::RabbitMq, true) => "amqps",
        };
        Self {
            url: format!("{scheme}://{address}"),
            kind,
            tls,
            username: None,
        }
    }

    /// The same URL with `username` (when it names none itself).
    pub fn with_username(mut self, username: Option<&str>) -> Self {
        if self.username.is_some() {
            return self;
        }
        let Some(username) = username.filter(|name| !name.is_empty()) else {
            return self;
        };
        if let Some((scheme, rest)) = self.url.split_once("://") {
            self.url = format!("{scheme}://{username}@{rest}");
            self.username = Some(username.to_owned());
        }
        self
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// A password read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Where.
    pub url: BrokerUrl,
    pub(crate) password: Option<Secret>,
    /// PEM CA certificates trusted for TLS (default: the system's).
    pub ca_pem: Option<Vec<u8>>,
    /// How long events are kept at least (see [`BrokerArgs::retention`]).
    pub retention: Duration,
}

impl BrokerSettings {
    /// Settings for `url` without a password or CA.
    pub fn new(url: BrokerUrl) -> Self {
        Self {
            url,
            password: None,
            ca_pem: None,
            retention: DEFAULT_RETENTION,
        }
    }

    /// With `password` (tests; services read it from a file).
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// With `retention` (see [`BrokerArgs::retention`]).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Whether a password is set.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }
}

/// The broker flags of every publisher and consumer (their ids are
/// prefixed, so they flatten beside the Consul flags).
#[derive(clap::Args, Clone)]
pub struct BrokerArgs {
    /// The broker: `redis://host:port` (Redis Streams, the default kind),
    /// `rediss://` (TLS), `amqp://host:port` (RabbitMQ) or `amqps://`. A user
    /// name may be in the URL, a password may not. Default: the broker
    /// registered in Consul as `--broker-service`.
    #[arg(
        id = "broker_url",
        value_name = "URL",
        long = "broker-url",
        env = "MESH_BROKER_URL"
    )]
    pub url: Option<String>,

    /// File holding the broker password (Redis `AUTH`/ACL user, RabbitMQ
    /// user); read at start, never logged.
    #[arg(
        id = "broker_password_file",
        value_name = "FILE",
        long = "broker-password-file",
        env = "MESH_BROKER_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,

    /// The broker user when the URL names none (RabbitMQ's default is
    /// `guest`, Redis' `default`).
    #[arg(
        id = "broker_username",
        value_name = "USER",
        long = "broker-username",
        env = "MESH_BROKER_USERNAME"
    )]
    pub username: Option<String>,

    /// PEM file of the CA that signed the broker's TLS certificate (for
    /// `rediss://` and `amqps://`; default: the system's trust store).
    #[arg(
        id = "broker_ca_file",
        value_name = "FILE",
        long = "broker-cacert",
        env = "MESH_BROKER_CACERT"
    )]
    pub ca_file: Option<PathBuf>,

    /// The Consul service the broker is registered as, used when no URL is
    /// given.
    #[arg(id = "broker_service", value_name = "SERVICE", long = "broker-service", env = "MESH_BROKER_SERVICE", default_value = crate::locate::CONSUL_SERVICE)]
    pub service: String,

    /// How long the broker keeps an event at least, also once every consumer
    /// group has acknowledged it: what a consumer group created later can
    /// still read (Redis: trimming by the publishers; RabbitMQ: the topic
    /// log's message TTL). Unacknowledged events are never dropped.
    #[arg(value_name = "DURATION", id = "broker_retention", long = "broker-retention", env = "MESH_BROKER_RETENTION", default_value = "168h",
          value_parser = mesh::config::duration::parser(mesh::config::duration::BareUnit::Seconds, Duration::from_secs(1)))]
    pub retention: Duration,
}

impl fmt::Debug for BrokerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerArgs")
            .field("url", &self.url)
            .field("password_file", &self.password_file)
            .field("username", &self.username)
            .field("ca_file", &self.ca_file)
            .field("service", &self.service)
            .field("retention", &self.retention)
            .finish()
    }
}

impl BrokerArgs {
    /// The URL given by flag or environment, parsed (`None` when the broker
    /// is to be found in Consul).
    pub fn explicit_url(&self) -> Result<Option<BrokerUrl>, SettingsError> {
        self.url
            .as_deref()
            .filter(|url| !url.is_empty())
            .map(BrokerUrl::parse)
            .transpose()
    }

    /// Settings for `url` with the password and CA files read.
    pub fn settings_for(&self, url: BrokerUrl) -> Result<BrokerSettings, SettingsError> {
        let read = |what: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| SettingsError::File {
                what,
                path: path.clone(),
                source,
            })
        };
        let password = match &self.password_file {
            None => None,
            Some(path) => {
                let raw = read("password", path)?;
                let text = String::from_utf8_lossy(&raw)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                Some(Secret(text)).filter(|secret| !secret.0.is_empty())
            }
        };
        let ca_pem = self
            .ca_file
            .as_ref()
            .map(|path| read("CA", path))
            .transpose()?;
        Ok(BrokerSettings {
            url: url.with_username(self.username.as_deref()),
            password,
            ca_pem,
            retention: self.retention,
        })
    }

    /// Checks the flags without connecting (at start-up: a bad URL or an
    /// unreadable file stops the service with a clear message).
    pub fn check(&self) -> Result<(), SettingsError> {
        if let Some(url) = self.explicit_url()? {
            self.settings_for(url)?;
        } else {
            self.settings_for(BrokerUrl::for_address(
                BrokerKind::Redis,
                false,
                "127.0.0.1:6379",
            ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_choose_the_broker_and_tls() {
        let cases = [
            ("redis://127.0.0.1:6379", BrokerKind::Redis, false),
            ("rediss://redis.mesh:6380/0", BrokerKind::Redis, true),
            ("amqp://127.0.0.1:5672/%2f", BrokerKind::RabbitMq, false),
            ("amqps://mesh@rabbit:5671", BrokerKind::RabbitMq, true),
        ];
        for (url, kind, tls) in cases {
            let parsed = BrokerUrl::parse(url).unwrap();
            assert_eq!((parsed.kind(), parsed.tls()), (kind, tls), "{url}");
        }
        assert_eq!(
            BrokerUrl::parse("amqps://mesh@rabbit:5671")
                .unwrap()
                .username(),
            Some("mesh")
        );
        for bad in ["kafka://x:9092", "127.0.0.1:6379", "redis://", "redis:///0"] {
            assert!(
                matches!(BrokerUrl::parse(bad), Err(SettingsError::Url { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_never_echoed() {
        let error = BrokerUrl::parse("redis://default:s3cret@127.0.0.1:6379").unwrap_err();
        assert!(matches!(error, SettingsError::PasswordInUrl));
        assert!(!error.to_string().contains("s3cret"));
    }

    #[test]
    fn the_password_comes_from_its_file_and_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "hunter2\n").unwrap();
        let args = BrokerArgs {
            url: Some("redis://127.0.0.1:1".into()),
            password_file: Some(file),
            username: Some("mesh".into()),
            ca_file: None,
            service: "mesh-broker".into(),
            retention: DEFAULT_RETENTION,
        };
        let settings = args
            .settings_for(args.explicit_url().unwrap().unwrap())
            .unwrap();
        assert_eq!(settings.password.as_ref().unwrap().expose(), "hunter2");
        assert_eq!(settings.url.as_str(), "redis://mesh@127.0.0.1:1");
        let printed = format!("{settings:?} {args:?}");
        assert!(!printed.contains("hunter2"), "{printed}");

        let missing = BrokerArgs {
            password_file: Some(dir.path().join("nope")),
            ..args
        };
        let error = missing.check().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot read the broker password file"),
            "{error}"
        );
    }
}
