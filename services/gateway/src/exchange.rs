//! What the request path shares: the gateway's settings and parts
//! ([`Gateway`]), and what one request did ([`Exchange`]), filled in by the
//! REST and gRPC sides and read by the access log, the metrics and the span.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use tonic::Code;

use crate::{
    api::Api,
    auth::Authenticator,
    errors::ApiError,
    observe::{AccessLog, HttpMetrics},
    protect::{
        client_addr::Cidr,
        deadline::Deadlines,
        rate::{too_many_requests, CallerKey, RateLimits},
    },
    upstream::Upstreams,
};

/// Request size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (REST JSON, or one gRPC message).
    pub max_body_bytes: usize,
    /// Longest path and query.
    pub max_url_bytes: usize,
}

/// Everything a request needs, shared by every connection.
pub struct Gateway {
    pub(crate) api: Arc<Api>,
    pub(crate) upstreams: Upstreams,
    pub(crate) auth: Authenticator,
    pub(crate) rates: RateLimits,
    pub(crate) deadlines: Deadlines,
    pub(crate) limits: Limits,
    pub(crate) trusted_proxies: Vec<Cidr>,
    pub(crate) openapi: Bytes,
    pub(crate) metrics: HttpMetrics,
    pub(crate) access_log: AccessLog,
    pub(crate) cors: Option<tower_http::cors::CorsLayer>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("methods", &self.api.methods().len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// 429 when `key`'s bucket is empty.
    pub(crate) fn rate_limit(&self, key: &CallerKey) -> Result<(), ApiError> {
        self.rates.check(key).map_err(too_many_requests)
    }
}

/// What one request did, filled in along its way, for the access log,
/// the metrics and the span.
#[derive(Debug, Clone)]
pub(crate) struct ExchangeInfo {
    pub(crate) client: IpAddr,
    pub(crate) route: String,
    pub(crate) subject: Option<String>,
    pub(crate) code: Option<Code>,
}

/// A shared handle on one request's [`ExchangeInfo`] (it travels in the
/// request's extensions through tonic-web to the gRPC side).
#[derive(Debug, Clone)]
pub(crate) struct Exchange(Arc<Mutex<ExchangeInfo>>);

impl Default for Exchange {
    fn default() -> Self {
        Self::new(IpAddr::from([0, 0, 0, 0]))
    }
}

impl Exchange {
    pub(crate) fn new(client: IpAddr) -> Self {
        Self(Arc::new(Mutex::new(ExchangeInfo {
            client,
            route: String::new(),
            subject: None,
            code: None,
        })))
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut ExchangeInfo)) {
        change(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(crate) fn client(&self) -> IpAddr {
        self.snapshot().client
    }

    pub(crate) fn snapshot(&self) -> ExchangeInfo {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
