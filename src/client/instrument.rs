//! The client's observability layers:
//!
//! - [`ClientTrace`], outermost: one `grpc.client` span per call (target
//!   `mesh::rpc`; a child of the handler's `grpc.server` span when the call is
//!   made inside an RPC) with `rpc.system`, `rpc.service`, `rpc.method`,
//!   `rpc.grpc.status_code`, `mesh.target` (the service called) and
//!   `mesh.chain_target` (the discovery-chain target the call went to,
//!   written by `dispatch::Dispatch`); its W3C `traceparent` goes into the request's
//!   metadata (every attempt carries it); the span ends with the response body.
//! - [`EndpointObserve`], per endpoint (beside `Ejectable`): counts the attempts
//!   each instance receives (`mesh_client_endpoint_requests_total`) and writes
//!   the chosen instance (`server.address`, `server.port`) and the number of
//!   previous attempts (`rpc.grpc.previous_rpc_attempts`) on the call's span.
//!   It runs in the balancer's task, where tower's `Buffer` re-enters the
//!   caller's span, so `Span::current()` is the call's span.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tonic::{body::Body, Code};
use tower::{layer::layer_fn, BoxError, Layer, Service};
use tracing::{field::Empty, Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::{
    grpc_code_name, grpc_status,
    metrics::{endpoint_requests, EndpointLabels},
    split_path,
    traces::{self, RPC_TARGET},
};

/// The call span layer (see the module docs).
#[derive(Clone)]
pub(crate) struct ClientTrace<S> {
    inner: S,
    target: Arc<str>,
}

impl<S> ClientTrace<S> {
    /// Spans of calls to the Consul service `target`.
    pub(crate) fn layer(target: &str) -> impl Layer<S, Service = Self> + Clone {
        let target: Arc<str> = target.into();
        layer_fn(move |inner| Self {
            inner,
            target: target.clone(),
        })
    }
}

fn record_status(span: &Span, code: Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if code != Code::Ok {
        span.set_status(opentelemetry::trace::Status::error(grpc_code_name(code)));
    }
}

/// The gRPC code of a failed call.
pub(crate) trait ErrorCode {
    /// The code the caller sees.
    fn grpc_code(&self) -> Code;
}

impl ErrorCode for tonic::Status {
    fn grpc_code(&self) -> Code {
        self.code()
    }
}

impl ErrorCode for BoxError {
    fn grpc_code(&self) -> Code {
        self.downcast_ref::<tonic::Status>()
            .map_or(Code::Unknown, tonic::Status::code)
    }
}

impl<S> Service<http::Request<Body>> for ClientTrace<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: ErrorCode + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let (service, method) = split_path(path).unwrap_or(("", ""));
        let span = tracing::info_span!(
            target: RPC_TARGET,
            "grpc.client",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            mesh.target = &*self.target,
            mesh.chain_target = Empty,
            server.address = Empty,
            server.port = Empty,
            rpc.grpc.previous_rpc_attempts = Empty,
            rpc.grpc.status_code = Empty,
            trace_id = Empty,
        );
        if span.is_disabled() {
            return Box::pin(self.inner.call(request));
        }
        let root = Span::current().is_none();
        traces::inject(&span.context(), request.headers_mut());
        if root {
            // Inside an RPC the server span already names the trace.
            if let Some(trace_id) = traces::trace_id(&span) {
                span.record("trace_id", tracing::field::display(&trace_id));
            }
        }
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            match future.instrument(span.clone()).await {
                Ok(response) => match grpc_status(response.headers()) {
                    Some(code) => {
                        record_status(&span, code);
                        Ok(response)
                    }
                    None => Ok(response.map(|body| {
                        Body::new(TracedBody {
                            inner: body,
                            span,
                            recorded: false,
                        })
                    })),
                },
                Err(error) => {
                    record_status(&span, error.grpc_code());
                    Err(error)
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call's status from the trailers and
    /// ends the call's span with the body.
    struct TracedBody {
        #[pin]
        inner: Body,
        span: Span,
        recorded: bool,
    }

    impl PinnedDrop for TracedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.recorded {
                let code = if this.inner.is_end_stream() { Code::Unknown } else { Code::Cancelled };
                record_status(this.span, code);
            }
        }
    }
}

impl HttpBody for TracedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(status))) => Some(status.code()),
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code {
            if !std::mem::replace(this.recorded, true) {
                record_status(this.span, code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The per-endpoint layer (see the module docs).
pub(crate) struct EndpointObserve<S> {
    inner: S,
    ip: Arc<str>,
    port: u16,
    requests: Counter,
}

impl<S> EndpointObserve<S> {
    /// Observes the connection to `target`'s instance at `address`.
    pub(crate) fn layer(target: &str, address: SocketAddr) -> impl Layer<S, Service = Self> {
        let requests = endpoint_requests().get_or_create_owned(&EndpointLabels {
            target: target.to_owned(),
            endpoint: address.to_string(),
        });
        let ip: Arc<str> = address.ip().to_string().into();
        layer_fn(move |inner| Self {
            inner,
            ip: ip.clone(),
            port: address.port(),
            requests: requests.clone(),
        })
    }
}

impl<S, B> Service<http::Request<B>> for EndpointObserve<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> S::Future {
        self.requests.inc();
        let span = Span::current();
        if !span.is_disabled() {
            span.record("server.address", &*self.ip);
            span.record("server.port", i64::from(self.port));
            let previous = request
                .headers()
                .get("grpc-previous-rpc-attempts")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i64>().ok())
                .unwrap_or(0);
            span.record("rpc.grpc.previous_rpc_attempts", previous);
            if previous > 0 {
                tracing::debug!(
                    attempt = previous + 1,
                    endpoint.address = &*self.ip,
                    endpoint.port = self.port,
                    "retrying"
                );
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanKind, TraceContextExt};
    use tower::ServiceExt;

    use super::*;
    use crate::telemetry::traces::testing::{capture, Captured};

    #[tokio::test]
    async fn the_call_span_carries_the_endpoint_retries_and_status_and_is_propagated() {
        let (dispatch, captured, provider) = capture();
        let _default = tracing::dispatcher::set_default(&dispatch);
        let address: SocketAddr = "127.0.0.7:4000".parse().unwrap();
        let endpoint = EndpointObserve::layer("users-test-span", address).layer(tower::service_fn(
            |request: http::Request<Body>| async move {
                let traceparent = request.headers().get("traceparent").cloned();
                assert!(traceparent.is_some(), "traceparent reaches the endpoint");
                Ok::<_, BoxError>(tonic::Status::not_found("nobody").into_http())
            },
        ));
        // Stand-in for the retry layer: the second attempt reaches the endpoint.
        let retrying = tower::service_fn(move |mut request: http::Request<Body>| {
            let endpoint = endpoint.clone_for_test();
            async move {
                request
                    .headers_mut()
                    .insert("grpc-previous-rpc-attempts", "1".parse().unwrap());
                endpoint.oneshot(request).await
            }
        });
        let outer = tracing::info_span!("handler");
        let outer_trace = {
            let _entered = outer.enter();
            outer.context().span().span_context().trace_id()
        };
        let call = ClientTrace::layer("users-test-span").layer(retrying);
        let request = http::Request::builder()
            .uri("http://users/mesh.users.v1.Users/GetUser")
            .body(Body::empty())
            .unwrap();
        let response = call
            .oneshot(request)
            .instrument(outer.clone())
            .await
            .unwrap();
        assert_eq!(grpc_status(response.headers()), Some(Code::NotFound));
        drop(response);
        drop(outer);
        provider.force_flush().unwrap();
        let spans = captured.spans();
        let client = spans
            .iter()
            .find(|span| span.span_kind == SpanKind::Client)
            .expect("a client span");
        let handler = spans
            .iter()
            .find(|span| span.name == "handler")
            .expect("the handler span");
        assert_eq!(client.name, "mesh.users.v1.Users/GetUser");
        assert_eq!(client.span_context.trace_id(), outer_trace);
        assert_eq!(client.parent_span_id, handler.span_context.span_id());
        let attribute = |key| Captured::attribute(client, key).map(|value| value.to_string());
        assert_eq!(attribute("rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            attribute("rpc.service").as_deref(),
            Some("mesh.users.v1.Users")
        );
        assert_eq!(attribute("rpc.method").as_deref(), Some("GetUser"));
        assert_eq!(attribute("server.address").as_deref(), Some("127.0.0.7"));
        assert_eq!(attribute("server.port").as_deref(), Some("4000"));
        assert_eq!(
            attribute("rpc.grpc.previous_rpc_attempts").as_deref(),
            Some("1")
        );
        assert_eq!(attribute("rpc.grpc.status_code").as_deref(), Some("5"));
        assert!(matches!(
            client.status,
            opentelemetry::trace::Status::Error { .. }
        ));
        let text = crate::telemetry::metrics::encode_text();
        assert!(
            text.contains(r#"mesh_client_endpoint_requests_total{target="users-test-span",endpoint="127.0.0.7:4000"} 1"#),
            "{text}"
        );
    }

    impl<S: Clone> EndpointObserve<S> {
        fn clone_for_test(&self) -> Self {
            Self {
                inner: self.inner.clone(),
                ip: self.ip.clone(),
                port: self.port,
                requests: self.requests.clone(),
            }
        }
    }
}
