//! Deadlines (gRPC's `grpc-timeout`), shared by the server and the client,
//! on one clock (tokio's [`Instant`]): parsing and formatting the header, the
//! task-local deadline of the RPC a handler is serving, and a handler's
//! budget for the calls it makes ([`CallBudget`]). The server sets the
//! task-local deadline ([`scope`], from the server's deadline layer); the mesh
//! client reads it ([`incoming`]), so calls made inside a handler inherit what
//! is left of the caller's deadline.

use std::{future::Future, time::Duration};

use tokio::time::Instant;
use tonic::{metadata::MetadataMap, Status};

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

/// How long the calls a handler makes for one incoming request may take:
/// `per_call` each, and never past the incoming request's deadline.
#[derive(Debug, Clone, Copy)]
pub struct CallBudget {
    per_call: Duration,
    deadline: Option<Instant>,
}

impl CallBudget {
    /// A budget of `per_call` per call, ending at the incoming request's
    /// deadline: the one the server's deadline layer fixed when the request
    /// arrived ([`incoming`]), else its `grpc-timeout` in `metadata` from now.
    pub fn from_incoming(metadata: &MetadataMap, per_call: Duration) -> Self {
        let deadline = incoming().or_else(|| {
            grpc_timeout(metadata.as_ref()).and_then(|timeout| Instant::now().checked_add(timeout))
        });
        Self { per_call, deadline }
    }

    /// A budget without a caller deadline: `per_call` for every call. For
    /// work that must run even when the caller has given up (compensations,
    /// recovery).
    pub fn detached(per_call: Duration) -> Self {
        Self {
            per_call,
            deadline: None,
        }
    }

    /// The timeout of the next call, or `None` when the deadline has passed.
    pub fn next_timeout(&self) -> Option<Duration> {
        match self.deadline {
            None => Some(self.per_call),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                (!left.is_zero()).then(|| left.min(self.per_call))
            }
        }
    }

    /// Time left until the caller's deadline (`per_call` when it has none).
    pub fn remaining(&self) -> Duration {
        match self.deadline {
            None => self.per_call,
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
        }
    }
}

/// `message` as a request carrying the budget's next timeout (sent as
/// `grpc-timeout` and enforced by the channel), or DEADLINE_EXCEEDED when the
/// caller's deadline has already passed — the call is then not made.
pub fn outgoing<T>(message: T, budget: &CallBudget) -> Result<tonic::Request<T>, Status> {
    let timeout = budget.next_timeout().ok_or_else(|| {
        Status::deadline_exceeded("the request's deadline passed before the work was complete")
    })?;
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    Ok(request)
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

    fn metadata(timeout: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", timeout.parse().unwrap());
        metadata
    }

    #[test]
    fn a_shorter_incoming_deadline_shortens_the_call_timeout() {
        let budget = CallBudget::from_incoming(&metadata("300m"), Duration::from_secs(2));
        let timeout = budget.next_timeout().unwrap();
        assert!(timeout <= Duration::from_millis(300) && timeout > Duration::from_millis(200));
        let request = outgoing((), &budget).unwrap();
        let header = request
            .metadata()
            .get("grpc-timeout")
            .unwrap()
            .to_str()
            .unwrap();
        let sent = parse_grpc_timeout(header).unwrap();
        assert!(sent <= Duration::from_millis(300), "{header}");
    }

    #[test]
    fn a_longer_or_missing_deadline_keeps_the_per_call_timeout() {
        let budget = CallBudget::from_incoming(&metadata("1M"), Duration::from_secs(2));
        assert_eq!(budget.next_timeout(), Some(Duration::from_secs(2)));
        let budget = CallBudget::from_incoming(&MetadataMap::new(), Duration::from_secs(2));
        assert_eq!(budget.next_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(
            CallBudget::detached(Duration::from_secs(1)).next_timeout(),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_passed_deadline_makes_no_call() {
        let budget = CallBudget::from_incoming(&metadata("1n"), Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(budget.next_timeout(), None);
        let status = outgoing((), &budget).unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn inside_a_handler_the_budget_ends_at_the_servers_deadline() {
        // The server's layer fixed the deadline when the request arrived; the
        // budget keeps that instant rather than re-reading the header later.
        let arrived = Instant::now() + Duration::from_millis(300);
        let budget = scope(Some(arrived), async {
            CallBudget::from_incoming(&metadata("10S"), Duration::from_secs(2))
        })
        .await;
        assert!(budget.remaining() <= Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_runs_on_tokios_clock() {
        let budget = CallBudget::from_incoming(&metadata("500m"), Duration::from_secs(2));
        tokio::time::advance(Duration::from_millis(400)).await;
        let left = budget.next_timeout().unwrap();
        assert!(left <= Duration::from_millis(100), "{left:?}");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(budget.next_timeout(), None);
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
