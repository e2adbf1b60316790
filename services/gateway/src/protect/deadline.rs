//! The deadline of a call through the gateway: the caller's `grpc-timeout`
//! (gRPC, gRPC-Web) or `X-Request-Timeout` (REST: `2s`, `500ms`, or bare
//! seconds), else the default; never more than the maximum. It bounds the
//! whole request (reading the body included) and becomes the mesh call's
//! `grpc-timeout`.

use std::time::Duration;

use mesh::config::duration::{parse, BareUnit};

/// The REST header naming the caller's deadline.
pub const REQUEST_TIMEOUT_HEADER: &str = "x-request-timeout";

/// The default and the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// When the caller names none.
    pub default: Duration,
    /// The longest a caller may ask for.
    pub max: Duration,
}

impl Deadlines {
    /// The deadline of a request with these headers; `Err` with a message
    /// when the caller's header is malformed.
    pub fn of(&self, headers: &http::HeaderMap) -> Result<Duration, String> {
        if let Some(value) = headers.get("grpc-timeout") {
            let timeout = value
                .to_str()
                .ok()
                .and_then(mesh::deadline::parse_grpc_timeout)
                .ok_or_else(|| {
                    "grpc-timeout must be 1 to 8 digits and a unit (H, M, S, m, u, n)".to_owned()
                })?;
            return Ok(self.cap(timeout));
        }
        if let Some(value) = headers.get(REQUEST_TIMEOUT_HEADER) {
            let text = value
                .to_str()
                .map_err(|_| "X-Request-Timeout is not text".to_owned())?;
            let timeout = parse(text, BareUnit::Seconds)
                .map_err(|error| format!("X-Request-Timeout: {}", crate::bounded(&error)))?;
            if timeout.is_zero() {
                return Err("X-Request-Timeout must be more than zero".into());
            }
            return Ok(self.cap(timeout));
        }
        Ok(self.default)
    }

    fn cap(&self, timeout: Duration) -> Duration {
        timeout.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline(name: &str, value: &str) -> Result<Duration, String> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        Deadlines {
            default: Duration::from_secs(10),
            max: Duration::from_secs(30),
        }
        .of(&headers)
    }

    #[test]
    fn the_callers_deadline_is_honoured_up_to_the_maximum() {
        assert_eq!(
            deadline("grpc-timeout", "200m"),
            Ok(Duration::from_millis(200))
        );
        assert_eq!(deadline("grpc-timeout", "5M"), Ok(Duration::from_secs(30)));
        assert_eq!(
            deadline(REQUEST_TIMEOUT_HEADER, "1.5"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            deadline(REQUEST_TIMEOUT_HEADER, "250ms"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            deadline(REQUEST_TIMEOUT_HEADER, "1h"),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(deadline("x-other", "1"), Ok(Duration::from_secs(10)));
        assert!(deadline(REQUEST_TIMEOUT_HEADER, "soon")
            .unwrap_err()
            .contains("X-Request-Timeout"));
        assert!(deadline(REQUEST_TIMEOUT_HEADER, "0").is_err());
        assert!(deadline("grpc-timeout", "1.5S").is_err());
    }
}
