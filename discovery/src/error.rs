//! The crate's errors: configuration mistakes and failed Consul calls.

use std::time::Duration;

/// A configuration that cannot work: caught before anything is sent to Consul.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The Consul address is empty.
    #[error("the Consul address is empty")]
    EmptyAddress,
    /// TLS settings (`CONSUL_CACERT`…) given for a plain-HTTP address.
    #[error(
        "TLS settings (CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME) \
         are set but the Consul address {address:?} is plain HTTP: use https://host:port or \
         CONSUL_HTTP_SSL=true"
    )]
    TlsWithoutHttps {
        /// The address as given.
        address: String,
    },
    /// The certificates or keys for HTTPS to the agent cannot be used.
    #[error("HTTPS to Consul: {reason}")]
    Tls {
        /// What is wrong, naming the variable to fix.
        reason: String,
    },
    /// A boolean variable (`CONSUL_HTTP_SSL`…) that is not a boolean.
    #[error("{name}={value:?} is not a boolean: use true or false")]
    InvalidBool {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
    },
    /// A scheme other than `http://` or `https://`.
    #[error("the Consul address {address:?} has the unsupported scheme {scheme:?}: use host:port or http://host:port")]
    UnsupportedScheme {
        /// The address as given.
        address: String,
        /// The scheme found.
        scheme: String,
    },
    /// Not `host:port`.
    #[error("the Consul address {address:?} is not host:port: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token has characters that cannot travel in an HTTP header (it is not echoed).
    #[error(
        "the Consul token from {origin} has characters not allowed in an HTTP header \
         (only visible ASCII is)"
    )]
    InvalidToken {
        /// Where the token came from (never the token).
        origin: String,
    },
    /// `CONSUL_HTTP_TOKEN_FILE` names a file that cannot be read.
    #[error("cannot read the Consul token file {path}: {source}")]
    TokenFile {
        /// The file named.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A service registration Consul would reject or that nobody could reach.
    #[error("invalid service registration {id:?}: {reason}")]
    InvalidRegistration {
        /// The registration's service ID.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A Consul HTTP call that failed. Never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsulError {
    /// Consul answered with a non-success status.
    #[error("Consul {method} {path} answered {status}: {body}")]
    Status {
        /// HTTP method.
        method: String,
        /// Request path (without the query).
        path: String,
        /// HTTP status code.
        status: u16,
        /// The start of the response body (Consul explains errors in plain text).
        body: String,
    },
    /// The request did not get an answer: connection refused or reset, DNS, protocol error.
    #[error("Consul {method} {path} failed: {message}")]
    Transport {
        /// HTTP method.
        method: String,
        /// Request path (without the query).
        path: String,
        /// The error and its causes.
        message: String,
    },
    /// No answer in time.
    #[error("Consul {method} {path} timed out after {timeout:?}")]
    Timeout {
        /// HTTP method.
        method: String,
        /// Request path (without the query).
        path: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// Consul's ACLs refused the call (403): the token is missing, unknown or
    /// lacks a permission.
    #[error("Consul denied {method} {path} (403 {body}) with {token_origin}: {needs}")]
    Denied {
        /// HTTP method.
        method: String,
        /// Request path (without the query).
        path: String,
        /// Consul's reason (`Permission denied`, `ACL not found`).
        body: String,
        /// Where the token came from (`CONSUL_HTTP_TOKEN_FILE <path>`…), never the token.
        token_origin: String,
        /// What the token needs, e.g. `service:write on "users"`.
        needs: String,
    },
    /// HTTPS to the agent failed: untrusted certificate, wrong name, an agent
    /// that speaks plain HTTP, or HTTP to an HTTPS agent.
    #[error("Consul {method} {path}: {message}")]
    Tls {
        /// HTTP method.
        method: String,
        /// Request path (without the query).
        path: String,
        /// What happened and what to fix.
        message: String,
    },
    /// The answer could not be understood.
    #[error("Consul {path}: cannot decode the answer: {message}")]
    Decode {
        /// Request path (without the query).
        path: String,
        /// What did not fit.
        message: String,
    },
}

/// How much of an error body is kept.
const BODY_EXCERPT: usize = 256;

/// The first [`BODY_EXCERPT`] bytes of `body` as text (cut on a character boundary).
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() <= BODY_EXCERPT {
        return text.to_owned();
    }
    let mut end = BODY_EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

pub(crate) use crate::error_chain::error_chain as chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded_and_cut_on_char_boundaries() {
        assert_eq!(excerpt(b"  short \n"), "short");
        let long = "é".repeat(500);
        let cut = excerpt(long.as_bytes());
        assert!(cut.len() <= BODY_EXCERPT + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt(&[0xff, 0xfe, b'x']), "\u{fffd}\u{fffd}x");
    }
}
