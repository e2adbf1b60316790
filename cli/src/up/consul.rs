//! Consul for `mesh up`: is there an agent at the configured address (use
//! it), or nothing on this machine's loopback (start one of our own there)?

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::consul::{ApiError, ConsulApi};

/// How long an answering agent may take to have a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether an agent answers at the configured address.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// It answers and has a leader: use it.
    Running,
    /// Nothing listens there (loopback only): start our own.
    Absent,
}

/// Asks `GET /v1/status/leader`. An agent without a leader yet gets 30 s.
pub(crate) async fn probe(api: &ConsulApi) -> anyhow::Result<Found> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        match api.leader().await {
            Ok(leader) if !leader.is_empty() => return Ok(Found::Running),
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(_) => bail!(
                "the Consul agent at {} has no leader after {LEADER_TIMEOUT:?}",
                api.address()
            ),
            Err(ApiError::Unreachable { .. }) if api.is_loopback() => return Ok(Found::Absent),
            Err(error @ ApiError::Unreachable { .. }) => bail!(
                "{error}. `mesh up` starts an agent of its own only on this machine's loopback: \
                 start that agent, or point CONSUL_HTTP_ADDR (--consul-addr) at 127.0.0.1:<port>"
            ),
            Err(error) => return Err(error.into()),
        }
    }
}
