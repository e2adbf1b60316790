//! Where Consul is and how to authenticate: `CONSUL_HTTP_ADDR` / `CONSUL_HTTP_TOKEN`.

use std::fmt;

use crate::error::ConfigError;

/// The address Consul's own tools use when `CONSUL_HTTP_ADDR` is unset.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";

/// Consul's default HTTP port, used when an address names no port.
const DEFAULT_PORT: u16 = 8500;

/// How to reach the Consul agent's HTTP API.
///
/// The token (if any) is sent as `X-Consul-Token` on every request and is never
/// printed: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulConfig {
    /// `host:port`, IPv6 hosts in brackets.
    authority: String,
    /// `http://host:port`, no trailing slash.
    base_url: String,
    token: Option<String>,
}

impl ConsulConfig {
    /// Accepts the forms of `CONSUL_HTTP_ADDR`: `127.0.0.1:8500`, `localhost:8500`,
    /// `[::1]:8500`, `http://host:8500` (a trailing `/` is ignored; a missing port
    /// means 8500). `https://` is refused with [`ConfigError::TlsNotSupported`] for
    /// now. An empty token counts as no token.
    pub fn new(address: &str, token: Option<String>) -> Result<Self, ConfigError> {
        let authority = parse_address(address)?;
        let token = match token {
            Some(token) if token.is_empty() => None,
            Some(token) => {
                validate_token(&token)?;
                Some(token)
            }
            None => None,
        };
        Ok(Self {
            base_url: format!("http://{authority}"),
            authority,
            token,
        })
    }

    /// Reads `CONSUL_HTTP_ADDR` (default `127.0.0.1:8500`) and `CONSUL_HTTP_TOKEN`
    /// (or, when that is unset, the file named by `CONSUL_HTTP_TOKEN_FILE`), as
    /// Consul's own CLI does.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let address = lookup("CONSUL_HTTP_ADDR")
            .filter(|value| !value.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        let token = match lookup("CONSUL_HTTP_TOKEN").filter(|value| !value.is_empty()) {
            Some(token) => Some(token),
            None => match lookup("CONSUL_HTTP_TOKEN_FILE").filter(|value| !value.is_empty()) {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|source| ConfigError::TokenFile { path, source })?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            },
        };
        Self::new(&address, token)
    }

    /// `host:port` of the agent (IPv6 hosts in brackets).
    pub fn address(&self) -> &str {
        &self.authority
    }

    /// `http://host:port`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether a token is configured (the token itself is never exposed for printing).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn parse_address(input: &str) -> Result<String, ConfigError> {
    let address = input.trim();
    if address.is_empty() {
        return Err(ConfigError::EmptyAddress);
    }
    let invalid = |reason: &str| ConfigError::InvalidAddress {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = match address.split_once("://") {
        Some((scheme, rest)) => {
            if scheme.eq_ignore_ascii_case("https") {
                return Err(ConfigError::TlsNotSupported {
                    address: address.to_owned(),
                });
            }
            if !scheme.eq_ignore_ascii_case("http") {
                return Err(ConfigError::UnsupportedScheme {
                    address: address.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
            rest
        }
        None => address,
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
    Ok(format!("{host}:{port}"))
}

fn validate_token(token: &str) -> Result<(), ConfigError> {
    // Visible ASCII only: a valid header value, and no way to smuggle a second header.
    if token.bytes().all(|byte| byte.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ConfigError::InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn refuses_https_with_a_clear_error() {
        let error = ConsulConfig::new("https://127.0.0.1:8501", None).unwrap_err();
        assert!(
            matches!(error, ConfigError::TlsNotSupported { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("TLS"), "{error}");
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
        assert_eq!(config.token(), Some("s3cr3t-token"));
        let debug = format!("{config:?} {config:#?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");

        assert!(!ConsulConfig::new("127.0.0.1:8500", Some(String::new()))
            .unwrap()
            .has_token());
        let error =
            ConsulConfig::new("127.0.0.1:8500", Some("bad\r\nX-Evil: 1".into())).unwrap_err();
        assert!(matches!(error, ConfigError::InvalidToken));
        assert!(!error.to_string().contains("Evil"));
    }

    #[test]
    fn reads_consul_environment_variables() {
        let config = ConsulConfig::from_lookup(|_| None).unwrap();
        assert_eq!(config.address(), DEFAULT_ADDRESS);
        assert!(!config.has_token());

        let config = ConsulConfig::from_lookup(|name| match name {
            "CONSUL_HTTP_ADDR" => Some("http://127.0.0.1:18500".into()),
            "CONSUL_HTTP_TOKEN" => Some("abc".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.address(), "127.0.0.1:18500");
        assert_eq!(config.token(), Some("abc"));

        let dir = std::env::temp_dir().join(format!("discovery-token-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let path = dir.to_string_lossy().into_owned();
        let config = ConsulConfig::from_lookup(|name| match name {
            "CONSUL_HTTP_TOKEN_FILE" => Some(path.clone()),
            _ => None,
        })
        .unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(config.token(), Some("from-file"));
    }
}
