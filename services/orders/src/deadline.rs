//! Per-call timeouts for the calls orders makes to users, inventory and
//! payments, shortened to what is left of the incoming request's
//! `grpc-timeout` (read with the mesh's one parser,
//! [`mesh::deadline::grpc_timeout`]).

use std::time::{Duration, Instant};

use mesh::deadline::grpc_timeout;
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
        let deadline =
            grpc_timeout(metadata.as_ref()).and_then(|timeout| Instant::now().checked_add(timeout));
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let sent = mesh::deadline::parse_grpc_timeout(header).unwrap();
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
