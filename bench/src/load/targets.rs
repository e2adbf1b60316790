//! What `mesh bench --via mesh` adds to its report: the calls each
//! discovery-chain target took during the run (a canary's split, or a
//! failover, in numbers), and the `-H` metadata every call carries.

use std::{collections::BTreeMap, sync::Arc};

use http::{header::HeaderName, HeaderValue};
use mesh::client::{Channel, MeshClient};
use serde::Serialize;
use tower::ServiceExt as _;

/// Calls one chain target took in the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct TargetShare {
    /// Consul's target ID (`v2.inventory.default.dc1`).
    pub(crate) target: String,
    /// Calls sent there first (retries aside).
    pub(crate) calls: u64,
    /// Their share of all calls to the service, percent.
    pub(crate) percent: f64,
}

/// First attempts per chain target of `service` so far.
pub(crate) fn counts(mesh: &MeshClient, service: &str) -> BTreeMap<String, u64> {
    mesh.chain_target_requests(service)
}

/// The calls each target took between two [`counts`].
pub(crate) fn shares(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> Vec<TargetShare> {
    let taken: Vec<(String, u64)> = after
        .iter()
        .map(|(target, count)| {
            let earlier = before.get(target).copied().unwrap_or(0);
            (target.clone(), count.saturating_sub(earlier))
        })
        .collect();
    let total: u64 = taken.iter().map(|(_, calls)| calls).sum();
    taken
        .into_iter()
        .map(|(target, calls)| TargetShare {
            target,
            calls,
            percent: if total == 0 {
                0.0
            } else {
                calls as f64 * 100.0 / total as f64
            },
        })
        .collect()
}

/// `channel` with `headers` added to every call's metadata.
pub(crate) fn with_metadata(channel: Channel, headers: Vec<(HeaderName, HeaderValue)>) -> Channel {
    if headers.is_empty() {
        return channel;
    }
    let headers = Arc::new(headers);
    Channel::new(
        channel.map_request(move |mut request: http::Request<tonic::body::Body>| {
            for (name, value) in headers.iter() {
                request.headers_mut().append(name.clone(), value.clone());
            }
            request
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_the_difference_over_the_run() {
        let before = BTreeMap::from([("v1".to_owned(), 100), ("v2".to_owned(), 0)]);
        let after = BTreeMap::from([
            ("v1".to_owned(), 1000),
            ("v2".to_owned(), 100),
            ("legacy".to_owned(), 0),
        ]);
        let shares = shares(&before, &after);
        assert_eq!(shares.len(), 3);
        let v1 = shares.iter().find(|share| share.target == "v1").unwrap();
        assert_eq!((v1.calls, v1.percent), (900, 90.0));
        let v2 = shares.iter().find(|share| share.target == "v2").unwrap();
        assert_eq!((v2.calls, v2.percent), (100, 10.0));
        assert!(super::shares(&before, &before)
            .iter()
            .all(|s| s.percent == 0.0));
    }
}
