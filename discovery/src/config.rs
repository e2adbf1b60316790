//! Where Consul is and how to talk to it: the address, HTTPS settings and the
//! ACL token, with the names and precedence of Consul's own CLI
//! (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_SSL`, `CONSUL_HTTP_SSL_VERIFY`,
//! `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`,
//! `CONSUL_TLS_SERVER_NAME`, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`).

use std::{ffi::OsString, fmt, path::PathBuf, sync::Arc};

use crate::{
    env,
    error::ConfigError,
    tls::{AgentTls, TlsSettings},
    token::TokenSource,
};

/// The address Consul's own tools use when `CONSUL_HTTP_ADDR` is unset.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";

/// Every environment variable Consul's CLI reads for its HTTP client, and
/// [`ConsulSettings::from_env`] too (named in [`env`]).
pub const CONSUL_ENVIRONMENT: [&str; 10] = env::ALL;

/// Consul's default HTTP port, used when an address names no port.
const DEFAULT_PORT: u16 = 8500;

/// What a user may say about the agent, before it is checked
/// ([`ConsulSettings::build`]). Every field maps to one of Consul's
/// environment variables; `None` means "not given".
///
/// `Debug` never shows the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConsulSettings {
    /// `CONSUL_HTTP_ADDR`: `host:port`, `http://host:port` or `https://host:port`
    /// (default `127.0.0.1:8500`).
    pub address: Option<String>,
    /// `CONSUL_HTTP_SSL`: HTTPS when the address names no scheme.
    pub ssl: Option<bool>,
    /// `CONSUL_HTTP_SSL_VERIFY`: `false` accepts any agent certificate (default true).
    pub ssl_verify: Option<bool>,
    /// `CONSUL_CACERT`: PEM file of the CA(s) that signed the agent's certificate
    /// (default: the system's trust store).
    pub ca_file: Option<PathBuf>,
    /// `CONSUL_CAPATH`: a folder of PEM files of CAs, every file read; as in
    /// Consul, `ca_file` wins when both are given.
    pub ca_path: Option<PathBuf>,
    /// `CONSUL_CLIENT_CERT`: PEM certificate chain shown to an agent that
    /// verifies incoming connections.
    pub client_cert: Option<PathBuf>,
    /// `CONSUL_CLIENT_KEY`: the private key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
    /// `CONSUL_TLS_SERVER_NAME`: the name the agent's certificate must carry
    /// (default: the address's host).
    pub tls_server_name: Option<String>,
    /// `CONSUL_HTTP_TOKEN`: the ACL token.
    pub token: Option<String>,
    /// `CONSUL_HTTP_TOKEN_FILE`: a file holding the ACL token, read again when it
    /// changes; like Consul's CLI, a non-empty file wins over `token`.
    pub token_file: Option<PathBuf>,
}

impl ConsulSettings {
    /// The settings Consul's CLI would take from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let text = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let path = |name: &str| text(name).map(PathBuf::from);
        let flag = |name: &str| text(name).map(|value| parse_bool(name, &value)).transpose();
        Ok(Self {
            address: text(env::HTTP_ADDR),
            ssl: flag(env::HTTP_SSL)?,
            ssl_verify: flag(env::HTTP_SSL_VERIFY)?,
            ca_file: path(env::CACERT),
            ca_path: path(env::CAPATH),
            client_cert: path(env::CLIENT_CERT),
            client_key: path(env::CLIENT_KEY),
            tls_server_name: text(env::TLS_SERVER_NAME),
            token: lookup(env::HTTP_TOKEN).filter(|value| !value.is_empty()),
            token_file: path(env::HTTP_TOKEN_FILE),
        })
    }

    /// These settings as Consul's environment variables, for a child process
    /// (what [`from_env`](Self::from_env) reads back): the ones given, the
    /// token included — pass them in its environment, never on its command line.
    pub fn environment(&self) -> Vec<(&'static str, OsString)> {
        let boolean = |value: bool| OsString::from(if value { "true" } else { "false" });
        let mut variables = Vec::new();
        let mut set = |name: &'static str, value: Option<OsString>| {
            if let Some(value) = value {
                variables.push((name, value));
            }
        };
        set(env::HTTP_ADDR, self.address.clone().map(OsString::from));
        set(env::HTTP_SSL, self.ssl.map(boolean));
        set(env::HTTP_SSL_VERIFY, self.ssl_verify.map(boolean));
        set(env::CACERT, self.ca_file.clone().map(OsString::from));
        set(env::CAPATH, self.ca_path.clone().map(OsString::from));
        set(
            env::CLIENT_CERT,
            self.client_cert.clone().map(OsString::from),
        );
        set(env::CLIENT_KEY, self.client_key.clone().map(OsString::from));
        set(
            env::TLS_SERVER_NAME,
            self.tls_server_name.clone().map(OsString::from),
        );
        set(env::HTTP_TOKEN, self.token.clone().map(OsString::from));
        set(
            env::HTTP_TOKEN_FILE,
            self.token_file.clone().map(OsString::from),
        );
        variables
    }

    /// Checks everything and loads the certificates and the token file, so
    /// that a mistake shows at start-up rather than on the first call.
    ///
    /// The scheme is the address's (`https://`, `http://`); without one,
    /// HTTPS when `ssl` is true. TLS settings with a plain-HTTP address are
    /// refused rather than ignored.
    pub fn build(&self) -> Result<ConsulConfig, ConfigError> {
        let address = self.address.as_deref().unwrap_or(DEFAULT_ADDRESS);
        let (scheme, authority) = parse_address(address)?;
        let https = match scheme {
            Some(Scheme::Https) => true,
            Some(Scheme::Http) => false,
            None => self.ssl.unwrap_or(false),
        };
        let wants_tls = self.ca_file.is_some()
            || self.ca_path.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.tls_server_name.is_some();
        if !https && wants_tls {
            return Err(ConfigError::TlsWithoutHttps {
                address: address.trim().to_owned(),
            });
        }
        let tls = if https {
            let host = host_of(&authority);
            Some(Arc::new(AgentTls::load(&TlsSettings {
                ca_file: self.ca_file.clone(),
                ca_path: self.ca_path.clone(),
                client_cert: self.client_cert.clone(),
                client_key: self.client_key.clone(),
                server_name: self
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| host.to_owned()),
                verify: self.ssl_verify.unwrap_or(true),
            })?))
        } else {
            None
        };
        let token = TokenSource::new(self.token.clone(), self.token_file.clone())?;
        Ok(ConsulConfig {
            base_url: format!("{}://{authority}", if https { "https" } else { "http" }),
            authority,
            settings: self.clone(),
            tls,
            token,
        })
    }
}

impl fmt::Debug for ConsulSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulSettings")
            .field("address", &self.address)
            .field("ssl", &self.ssl)
            .field("ssl_verify", &self.ssl_verify)
            .field("ca_file", &self.ca_file)
            .field("ca_path", &self.ca_path)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("tls_server_name", &self.tls_server_name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// How to reach the Consul agent's HTTP API: checked settings, loaded TLS
/// material and the token source. Cheap to clone (clones share the token
/// file's cache).
///
/// The token is sent as `X-Consul-Token` on every request and is never
/// printed: `Debug` redacts it.
#[derive(Clone)]
pub struct ConsulConfig {
    /// `host:port`, IPv6 hosts in brackets.
    authority: String,
    /// `http(s)://host:port`, no trailing slash.
    base_url: String,
    settings: ConsulSettings,
    tls: Option<Arc<AgentTls>>,
    token: TokenSource,
}

impl PartialEq for ConsulConfig {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl Eq for ConsulConfig {}

impl ConsulConfig {
    /// Accepts the forms of `CONSUL_HTTP_ADDR`: `127.0.0.1:8500`, `localhost:8500`,
    /// `[::1]:8500`, `http://host:8500`, `https://host:8501` (a trailing `/` is
    /// ignored; a missing port means 8500). HTTPS trusts the system's CAs; use
    /// [`ConsulSettings`] for a CA file, client certificates or a token file.
    /// An empty token counts as no token.
    pub fn new(address: &str, token: Option<String>) -> Result<Self, ConfigError> {
        ConsulSettings {
            address: Some(address.to_owned()),
            token,
            ..ConsulSettings::default()
        }
        .build()
    }

    /// Reads the environment as Consul's own CLI does (see [`ConsulSettings`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        ConsulSettings::from_env()?.build()
    }

    /// `host:port` of the agent (IPv6 hosts in brackets).
    pub fn address(&self) -> &str {
        &self.authority
    }

    /// `http://host:port` or `https://host:port`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether calls go over HTTPS.
    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }

    /// The settings this configuration was built from (`Debug` redacts the token).
    pub fn settings(&self) -> &ConsulSettings {
        &self.settings
    }

    /// Whether a token is configured (the token itself is never exposed for printing).
    pub fn has_token(&self) -> bool {
        self.token.current().is_some()
    }

    /// Where the token comes from, for error messages: `CONSUL_HTTP_TOKEN_FILE
    /// <path>`, `CONSUL_HTTP_TOKEN`, or `no token`. Never the token itself.
    pub fn token_origin(&self) -> String {
        self.token.origin()
    }

    pub(crate) fn token_source(&self) -> &TokenSource {
        &self.token
    }

    pub(crate) fn tls(&self) -> Option<&Arc<AgentTls>> {
        self.tls.as_ref()
    }
}

impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("base_url", &self.base_url)
            .field("tls", &self.tls)
            .field("token", &self.token)
            .finish()
    }
}

/// The scheme named in an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// Go's `strconv.ParseBool`, which Consul uses for its boolean variables.
fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(ConfigError::InvalidBool {
            name: name.to_owned(),
            value: other.to_owned(),
        }),
    }
}

/// The host of `host:port` (brackets of an IPv6 host removed).
fn host_of(authority: &str) -> &str {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn parse_address(input: &str) -> Result<(Option<Scheme>, String), ConfigError> {
    let address = input.trim();
    if address.is_empty() {
        return Err(ConfigError::EmptyAddress);
    }
    let invalid = |reason: &str| ConfigError::InvalidAddress {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = if scheme.eq_ignore_ascii_case("https") {
                Scheme::Https
            } else if scheme.eq_ignore_ascii_case("http") {
                Scheme::Http
            } else {
                return Err(ConfigError::UnsupportedScheme {
                    address: address.to_owned(),
                    scheme: scheme.to_owned(),
                });
            };
            (Some(scheme), rest)
        }
        None => (None, address),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(invalid("no host"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(invalid(
            "a path, query or fragment is not allowed; use host:port",
        ));
    }
    if rest.contains('@') {
        return Err(invalid(
            "user info is not allowed; pass the token separately",
        ));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (inner, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid("unclosed '[' around an IPv6 address"))?;
        inner
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| invalid("not an IPv6 address inside '[ ]'"))?;
        let port = match after {
            "" => None,
            after => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| invalid("junk after ']'"))?,
            ),
        };
        (format!("[{inner}]"), port)
    } else {
        match rest.matches(':').count() {
            0 => (rest.to_owned(), None),
            1 => {
                let (host, port) = rest.split_once(':').unwrap_or((rest, ""));
                (host.to_owned(), Some(port))
            }
            _ => return Err(invalid("put an IPv6 address in brackets: [::1]:8500")),
        }
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_'))
    {
        return Err(invalid(
            "the host has characters not allowed in a host name",
        ));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some("") => return Err(invalid("empty port")),
        Some(port) if !port.bytes().all(|byte| byte.is_ascii_digit()) => {
            return Err(invalid("the port is not a number"))
        }
        Some(port) => match port.parse::<u16>() {
            Ok(0) => return Err(invalid("port 0")),
            Ok(port) => port,
            Err(_) => return Err(invalid("the port is out of range")),
        },
    };
    Ok((scheme, format!("{host}:{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<ConsulSettings, ConfigError> {
        ConsulSettings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn the_environment_written_for_a_child_reads_back_the_same_settings() {
        let given = ConsulSettings {
            address: Some("https://127.0.0.1:8501".into()),
            ssl: Some(true),
            ssl_verify: Some(false),
            ca_file: Some("/tls/ca.pem".into()),
            ca_path: Some("/tls/ca.d".into()),
            client_cert: Some("/tls/cert.pem".into()),
            client_key: Some("/tls/key.pem".into()),
            tls_server_name: Some("server.dc1.consul".into()),
            token: Some("abc".into()),
            token_file: Some("/secrets/users.token".into()),
        };
        let written = given.environment();
        assert_eq!(
            written.len(),
            CONSUL_ENVIRONMENT.len(),
            "every field is written"
        );
        let read = ConsulSettings::from_lookup(|name| {
            written
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string_lossy().into_owned())
        })
        .unwrap();
        assert_eq!(read, given);
        assert!(ConsulSettings::default().environment().is_empty());
    }

    #[test]
    fn accepts_consul_http_addr_forms() {
        for (input, expected) in [
            ("127.0.0.1:8500", "127.0.0.1:8500"),
            ("localhost:8500", "localhost:8500"),
            ("http://127.0.0.1:8500", "127.0.0.1:8500"),
            ("HTTP://consul.internal:18500/", "consul.internal:18500"),
            ("  http://localhost:8500  ", "localhost:8500"),
            ("[::1]:8500", "[::1]:8500"),
            ("http://[::1]:9000", "[::1]:9000"),
            ("localhost", "localhost:8500"),
            ("http://10.0.0.1", "10.0.0.1:8500"),
        ] {
            let config =
                ConsulConfig::new(input, None).unwrap_or_else(|error| panic!("{input}: {error}"));
            assert_eq!(config.address(), expected, "{input}");
            assert_eq!(config.base_url(), format!("http://{expected}"), "{input}");
            assert!(!config.is_https());
        }
    }

    #[test]
    fn https_comes_from_the_address_or_consul_http_ssl() {
        let config = ConsulConfig::new("https://127.0.0.1:8501", None).unwrap();
        assert_eq!(config.base_url(), "https://127.0.0.1:8501");
        assert!(config.is_https());

        let config = settings(&[
            ("CONSUL_HTTP_ADDR", "127.0.0.1:8501"),
            ("CONSUL_HTTP_SSL", "true"),
        ])
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(config.base_url(), "https://127.0.0.1:8501");

        // As in Consul's client, an explicit scheme in the address wins.
        let config = settings(&[
            ("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500"),
            ("CONSUL_HTTP_SSL", "1"),
        ])
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(config.base_url(), "http://127.0.0.1:8500");

        let error = settings(&[("CONSUL_HTTP_SSL", "yes")]).unwrap_err();
        assert!(error.to_string().contains("CONSUL_HTTP_SSL"), "{error}");
    }

    #[test]
    fn tls_settings_with_plain_http_are_refused() {
        let error = settings(&[("CONSUL_CACERT", "/etc/consul/ca.pem")])
            .unwrap()
            .build()
            .unwrap_err();
        assert!(
            matches!(error, ConfigError::TlsWithoutHttps { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("https://"), "{error}");
    }

    #[test]
    fn refuses_bad_addresses() {
        for input in [
            "",
            "   ",
            "http://",
            "unix:///var/run/consul.sock",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "127.0.0.1:",
            "http://127.0.0.1:8500/v1",
            "http://user:pw@127.0.0.1:8500",
            "127.0.0.1:port",
            "::1:8500",
            "[::1",
            "[not-v6]:8500",
            "[::1]x",
            "bad host:8500",
        ] {
            assert!(
                ConsulConfig::new(input, None).is_err(),
                "{input:?} was accepted"
            );
        }
    }

    #[test]
    fn tokens_are_validated_and_redacted() {
        let config = ConsulConfig::new("127.0.0.1:8500", Some("s3cr3t-token".into())).unwrap();
        assert!(config.has_token());
        assert_eq!(
            config.token_source().current().as_deref(),
            Some("s3cr3t-token")
        );
        let debug = format!(
            "{config:?} {config:#?} {:?}",
            ConsulSettings {
                token: Some("s3cr3t-token".into()),
                ..ConsulSettings::default()
            }
        );
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");

        assert!(!ConsulConfig::new("127.0.0.1:8500", Some(String::new()))
            .unwrap()
            .has_token());
        let error =
            ConsulConfig::new("127.0.0.1:8500", Some("bad\r\nX-Evil: 1".into())).unwrap_err();
        assert!(matches!(error, ConfigError::InvalidToken { .. }));
        assert!(!error.to_string().contains("Evil"));
    }

    #[test]
    fn reads_consul_environment_variables() {
        let config = settings(&[]).unwrap().build().unwrap();
        assert_eq!(config.address(), DEFAULT_ADDRESS);
        assert!(!config.has_token());
        assert_eq!(config.token_origin(), "no token");

        let config = settings(&[
            ("CONSUL_HTTP_ADDR", "http://127.0.0.1:18500"),
            ("CONSUL_HTTP_TOKEN", "abc"),
        ])
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(config.address(), "127.0.0.1:18500");
        assert_eq!(config.token_source().current().as_deref(), Some("abc"));
        assert_eq!(config.token_origin(), "CONSUL_HTTP_TOKEN");

        // Like Consul's client: a non-empty token file wins over the token.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let path = file.to_string_lossy().into_owned();
        let config = settings(&[
            ("CONSUL_HTTP_TOKEN_FILE", path.as_str()),
            ("CONSUL_HTTP_TOKEN", "from-env"),
        ])
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(
            config.token_source().current().as_deref(),
            Some("from-file")
        );
        assert!(config.token_origin().contains(&path));

        let missing = dir.path().join("missing").to_string_lossy().into_owned();
        let error = settings(&[("CONSUL_HTTP_TOKEN_FILE", missing.as_str())])
            .unwrap()
            .build()
            .unwrap_err();
        assert!(error.to_string().contains(&missing), "{error}");
    }
}
