//! Deadlines (gRPC's `grpc-timeout`), shared by the server and the client:
//! parsing and formatting the header, and the task-local deadline of the RPC
//! a handler is serving. The server sets it ([`scope`], from the server's
//! deadline layer); the mesh client reads it ([`incoming`]), so calls made
//! inside a handler inherit what is left of the caller's deadline.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

tokio::task_local! {
    static INCOMING_DEADLINE: Instant;
}

/// The deadline of the incoming RPC being served on this task, if it had one.
pub fn incoming() -> Option<Instant> {
    INCOMING_DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Runs `future` with `deadline` as the incoming deadline (used by the server
/// for every request that carries `grpc-timeout`).
pub async fn scope<F: Future>(deadline: Option<Instant>, future: F) -> F::Output {
    match deadline {
        Some(deadline) => INCOMING_DEADLINE.scope(deadline, future).await,
        None => future.await,
    }
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit (H, M, S,
/// m, u, n), per the gRPC HTTP/2 protocol. Anything else (signs, decimals,
/// spaces inside, a 9th digit) is `None`.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..split)?, value.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The `grpc-timeout` of a request's headers, if present and valid.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// Formats `timeout` as a `grpc-timeout` value (milliseconds, rounded up;
/// at most 8 digits).
pub fn format_grpc_timeout(timeout: Duration) -> String {
    let millis = timeout.as_micros().div_ceil(1000).clamp(1, 99_999_999);
    format!("{millis}m")
}

/// The deadline of a request: now + the smallest of its own `grpc-timeout`,
/// the incoming RPC's remaining time and `default`.
pub(crate) fn for_request(headers: &http::HeaderMap, default: Duration) -> Instant {
    let now = Instant::now();
    let own = grpc_timeout(headers).map(|timeout| now + timeout);
    [Some(now + default), own, incoming()]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        for bad in [
            "",
            "S",
            "12x",
            "123456789S",
            "-1S",
            "+1S",
            "1.5S",
            "é",
            "1 S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_in_rounded_up_milliseconds() {
        assert_eq!(format_grpc_timeout(Duration::from_micros(1500)), "2m");
        assert_eq!(format_grpc_timeout(Duration::ZERO), "1m");
        assert_eq!(format_grpc_timeout(Duration::from_secs(3)), "3000m");
    }

    #[tokio::test]
    async fn the_smallest_of_own_incoming_and_default_wins() {
        let mut headers = http::HeaderMap::new();
        let start = Instant::now();
        let deadline = for_request(&headers, Duration::from_secs(10));
        assert!(deadline >= start + Duration::from_secs(10));

        headers.insert("grpc-timeout", "2S".parse().unwrap());
        let deadline = for_request(&headers, Duration::from_secs(10));
        assert!(deadline <= Instant::now() + Duration::from_secs(2));

        let incoming = Instant::now() + Duration::from_millis(300);
        let inherited = scope(Some(incoming), async {
            for_request(&headers, Duration::from_secs(10))
        })
        .await;
        assert_eq!(inherited, incoming);
    }
}
