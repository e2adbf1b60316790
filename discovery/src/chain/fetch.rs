//! `GET /v1/discovery-chain/<service>`: one request, plain or blocking.

use std::time::Duration;

use http::Method;

use super::model::DiscoveryChain;
use crate::{
    error::ConsulError,
    health::{parse_index, MAX_WAIT},
    http::{encode, ConsulHttp},
};

/// Beyond `wait` (+ Consul's up to `wait/16` jitter) before a request counts as lost.
const HTTP_SLACK: Duration = Duration::from_secs(5);

/// The path of `service`'s chain.
pub(crate) fn path(service: &str) -> String {
    format!("/v1/discovery-chain/{}", encode(service))
}

/// What the token needs to read a chain.
fn needs(service: &str) -> String {
    format!("the token needs service:read on {service:?}")
}

/// One request; `index` 0 is a plain read, otherwise it blocks up to `wait`.
/// Returns `X-Consul-Index` and the chain. A 404 (a Consul without discovery
/// chains, before 1.6) is a [`ConsulError::Status`] with status 404.
pub(crate) async fn fetch(
    http: &ConsulHttp,
    service: &str,
    index: u64,
    wait: Duration,
) -> Result<(u64, DiscoveryChain), ConsulError> {
    let path = path(service);
    let wait = wait.clamp(Duration::from_millis(1), MAX_WAIT);
    let (path_and_query, timeout) = if index > 0 {
        (
            format!("{path}?index={index}&wait={}ms", wait.as_millis()),
            wait + wait / 16 + HTTP_SLACK,
        )
    } else {
        (path.clone(), HTTP_SLACK * 2)
    };
    let answer = http
        .get(&path, &path_and_query, timeout)
        .await
        .map_err(|error| crate::agent::needs(error, needs(service)))?
        .success(&Method::GET, &path)?;
    let chain = DiscoveryChain::parse(&answer.body).map_err(|message| ConsulError::Decode {
        path: path.clone(),
        message,
    })?;
    Ok((parse_index(&answer.headers), chain))
}

/// Whether the token may read `service` (`service:read`): Consul refuses its
/// chain with 403 when it may not, where a health query would answer an empty
/// list. `Err(ConsulError::Denied)` when refused.
pub(crate) async fn read_permission(http: &ConsulHttp, service: &str) -> Result<(), ConsulError> {
    fetch(http, service, 0, HTTP_SLACK).await.map(drop)
}

/// Reads `service`'s chain once (for tools such as `mesh chain`).
pub async fn read(http: &ConsulHttp, service: &str) -> Result<DiscoveryChain, ConsulError> {
    fetch(http, service, 0, HTTP_SLACK)
        .await
        .map(|(_, chain)| chain)
}
