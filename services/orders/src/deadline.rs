//! Per-call timeouts for the calls orders makes to users, inventory and
//! payments, shortened to what is left of the incoming request's
//! `grpc-timeout`.
//!
//! Stand-in: the mesh client will propagate deadlines itself (DESIGN §4);
//! then [`outgoing`] becomes a plain `tonic::Request::new`.

use std::time::{Duration, Instant};

use tonic::{metadata::MetadataMap, Status};

/// How long upstream calls made for one incoming request may take.
#[derive(Debug, Clone, Copy)]
pub struct CallBudget {
    per_call: Duration,
    deadline: Option<Instant>,
}

impl CallBudget {
    /// A budget of `per_call` per call, ending at the incoming request's
    /// deadline if its metadata carries a `grpc-timeout`.
    pub fn from_incoming(metadata: &MetadataMap, per_call: Duration) -> Self {
        let deadline = metadata
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .and_then(|timeout| Instant::now().checked_add(timeout));
        Self { per_call, deadline }
    }

    /// A budget without a caller deadline: `per_call` for every call. For
    /// compensating calls (releasing stock), which must run even when the
    /// caller has given up.
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
        Status::deadline_exceeded("the request's deadline passed before the order was complete")
    })?;
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    Ok(request)
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit
/// (H, M, S, m, u, n), per the gRPC HTTP/2 protocol.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
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
}
