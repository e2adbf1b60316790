//! The gateway's request path, one tower service per connection:
//!
//! 1. the client address (the peer, or `X-Forwarded-For` behind a trusted
//!    proxy) and an `http.server` span continuing the caller's `traceparent`;
//! 2. the URL limit (414);
//! 3. dispatch: `application/grpc*` → gRPC and gRPC-Web ([`crate::grpc`]),
//!    `GET /` → the shop page, `GET /openapi.json` → the API document,
//!    anything else → REST ([`crate::rest`]);
//! 4. the answer's metrics, span attributes and access-log line.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use mesh::telemetry::traces::{self, RPC_TARGET};
use opentelemetry::trace::TraceContextExt as _;
use tonic::{body::Body, Code};
use tower::ServiceExt as _;
use tracing::{field::Empty, Instrument as _};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{
    errors::ApiError,
    exchange::{Exchange, Gateway},
    grpc::GrpcProxy,
    observe::access_log::AccessRecord,
    protect::client_addr::client_address,
};

impl Gateway {
    /// The service of one connection from `peer`, behind the CORS layer
    /// when origins are configured.
    pub fn connection(self: &Arc<Self>, peer: SocketAddr) -> ConnectionService {
        let service = GatewayService {
            gateway: self.clone(),
            grpc: tower::Layer::layer(
                &tonic_web::GrpcWebLayer::new(),
                GrpcProxy {
                    gateway: self.clone(),
                },
            ),
            peer,
        };
        match &self.cors {
            Some(cors) => tower::util::Either::Left(tower::Layer::layer(cors, service)),
            None => tower::util::Either::Right(service),
        }
    }
}

/// One connection's service: CORS (with `--cors-origin`), then the gateway.
pub type ConnectionService =
    tower::util::Either<tower_http::cors::Cors<GatewayService>, GatewayService>;

/// The gateway as one connection's tower service.
#[derive(Clone)]
pub struct GatewayService {
    gateway: Arc<Gateway>,
    grpc: tonic_web::GrpcWebService<GrpcProxy>,
    peer: SocketAddr,
}

impl<B> tower::Service<http::Request<B>> for GatewayService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request.map(Body::new)).await) })
    }
}

/// Which protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Rest,
    Grpc,
    GrpcWeb,
}

impl Protocol {
    fn of(headers: &http::HeaderMap) -> Self {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("application/grpc-web") {
            Self::GrpcWeb
        } else if content_type.starts_with("application/grpc") {
            Self::Grpc
        } else {
            Self::Rest
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::Grpc => "grpc",
            Self::GrpcWeb => "grpc-web",
        }
    }
}

impl GatewayService {
    async fn handle(self, mut request: http::Request<Body>) -> http::Response<Body> {
        let started = Instant::now();
        let time = now_rfc3339();
        let gateway = self.gateway.clone();
        let method = request.method().clone();
        let client = client_address(self.peer.ip(), request.headers(), &gateway.trusted_proxies);
        let exchange = Exchange::new(client);
        let protocol = Protocol::of(request.headers());
        let span = tracing::info_span!(
            target: RPC_TARGET,
            "http.server",
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method.as_str(),
            http.route = Empty,
            http.response.status_code = Empty,
            url.path = Empty,
            network.protocol.name = protocol.as_str(),
            client.address = %client,
            enduser.id = Empty,
            trace_id = Empty,
        );
        if !span.is_disabled() {
            let _ = span.set_parent(traces::extract(request.headers()));
        }
        let trace_id = traces::trace_id(&span);
        if let Some(trace_id) = &trace_id {
            span.record("trace_id", trace_id.as_str());
        }
        let path_and_query_len = request
            .uri()
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len());
        let response = async {
            if path_and_query_len > gateway.limits.max_url_bytes {
                return ApiError::new(
                    StatusCode::URI_TOO_LONG,
                    Code::InvalidArgument,
                    format!(
                        "the URL is longer than {} bytes",
                        gateway.limits.max_url_bytes
                    ),
                )
                .into_response();
            }
            match protocol {
                Protocol::Grpc | Protocol::GrpcWeb => {
                    request.extensions_mut().insert(exchange.clone());
                    match self.grpc.clone().oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }
                Protocol::Rest => match (request.method(), request.uri().path()) {
                    (&http::Method::GET, "/") => {
                        exchange.update(|e| e.route = "/".into());
                        crate::page::index()
                    }
                    (&http::Method::GET, "/openapi.json") => {
                        exchange.update(|e| e.route = "/openapi.json".into());
                        json_document(gateway.openapi.clone())
                    }
                    _ => crate::rest::serve(&gateway, request, &exchange).await,
                },
            }
        }
        .instrument(span.clone())
        .await;
        let info = exchange.snapshot();
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        if !span.is_disabled() {
            let name = if info.route.is_empty() {
                method.as_str().to_owned()
            } else if protocol == Protocol::Rest {
                format!("{} {}", method, info.route)
            } else {
                info.route.trim_start_matches('/').to_owned()
            };
            // The OTel span exists already (its trace id was read above):
            // rename it there, the name is known only after routing.
            span.context().span().update_name(name);
            span.record("http.response.status_code", status);
            if !info.route.is_empty() {
                span.record("http.route", info.route.as_str());
            }
            if let Some(subject) = &info.subject {
                span.record("enduser.id", subject.as_str());
            }
            if status >= 500 {
                span.record("otel.status_code", "ERROR");
            }
        }
        gateway
            .metrics
            .record(&method, &info.route, status, elapsed.as_secs_f64());
        gateway.access_log.write(&AccessRecord {
            time,
            method: method.as_str(),
            route: &info.route,
            status,
            grpc_status: info.code.map(|code| code as i32),
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            trace_id: trace_id.as_deref(),
            subject: info.subject.as_deref(),
            client: info.client.to_string(),
            protocol: protocol.as_str(),
        });
        response
    }
}

fn json_document(body: Bytes) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
