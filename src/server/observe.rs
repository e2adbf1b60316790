//! The server's observability layer, around the application service only
//! (health and reflection are not counted): for every RPC
//!
//! - a `grpc.server` span (target `mesh::rpc`) continuing the caller's trace
//!   from the `traceparent` metadata, with `rpc.system`, `rpc.service`,
//!   `rpc.method`, `rpc.grpc.status_code`, the caller's `peer.service`, the
//!   end user's `enduser.id` on calls from the gateway (see
//!   [`crate::caller`]), and a `trace_id` field that puts the trace id on
//!   every log line written inside the RPC;
//! - the RED metrics `grpc_server_started_total`, `grpc_server_handled_total`
//!   and `grpc_server_handling_seconds`.
//!
//! The status is read where gRPC puts it: in the response headers of a
//! trailers-only answer (how tonic sends an error), otherwise in the trailers
//! at the end of the body, which a body wrapper watches. A body dropped
//! before its end (the client went away) counts as CANCELLED. The span ends
//! with the body, so its duration covers the whole response.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use prost::Message as _;
use tonic::{body::Body, server::NamedService, Code};
use tower::{layer::layer_fn, BoxError, Layer, Service};
use tracing::{field::Empty, Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::error::ServeError;
use crate::config::ServiceArgs;
use crate::telemetry::{
    grpc_code_name, grpc_status,
    metrics::{HandledLabels, MethodLabels, ServerMetrics},
    split_path,
    traces::{self, RPC_TARGET},
};

/// At most this many distinct method names are tracked for a service whose
/// methods are not in the descriptor set; more land in `grpc_method="unknown"`.
const MAX_DYNAMIC_METHODS: usize = 64;

/// Observes the RPCs of the wrapped application service (see the module docs).
#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    methods: Arc<Methods>,
}

impl<S: NamedService> Observe<S> {
    /// Observes `inner` with the process's metric families.
    pub(crate) fn new(inner: S) -> Self {
        Self::with_metrics(inner, S::NAME, ServerMetrics::global())
    }

    /// [`Observe::new`] as a layer (item 1 of the server's stack).
    pub(crate) fn layer() -> impl Layer<S, Service = Self> + Clone {
        layer_fn(Self::new)
    }
}

impl<S> Observe<S> {
    pub(crate) fn with_metrics(inner: S, service: &'static str, metrics: ServerMetrics) -> Self {
        Self {
            inner,
            methods: Arc::new(Methods::new(service, metrics)),
        }
    }
}

impl<S: NamedService> NamedService for Observe<S> {
    const NAME: &'static str = S::NAME;
}

/// One method's cached label handles: the hot path only bumps atomics.
struct Method {
    service: &'static str,
    method: Box<str>,
    /// `package.Service/Method`, the OTel span name.
    span_name: Box<str>,
    started: Counter,
    handling: Histogram,
    handled: [OnceLock<Counter>; 17],
    metrics: ServerMetrics,
}

impl Method {
    fn new(service: &'static str, method: &str, metrics: &ServerMetrics) -> Self {
        let labels = MethodLabels {
            grpc_service: service.to_owned(),
            grpc_method: method.to_owned(),
        };
        Self {
            service,
            method: method.into(),
            span_name: format!("{service}/{method}").into(),
            started: metrics.started.get_or_create_owned(&labels),
            handling: metrics.handling.get_or_create_owned(&labels),
            handled: Default::default(),
            metrics: metrics.clone(),
        }
    }

    fn handled(&self, code: Code) -> &Counter {
        let index = (code as usize).min(self.handled.len() - 1);
        self.handled[index].get_or_init(|| {
            self.metrics.handled.get_or_create_owned(&HandledLabels {
                grpc_service: self.service.to_owned(),
                grpc_method: self.method.to_string(),
                grpc_code: grpc_code_name(code),
            })
        })
    }
}

/// The methods of one service: those of the descriptor set, created up front
/// (so `started_total` exists at 0 from the start), and an `unknown` bucket.
struct Methods {
    service: &'static str,
    known: HashMap<Box<str>, Arc<Method>>,
    /// For a service the descriptor set does not describe (tests): methods as seen.
    dynamic: Option<Mutex<HashMap<Box<str>, Arc<Method>>>>,
    unknown: Arc<Method>,
    metrics: ServerMetrics,
}

impl Methods {
    fn new(service: &'static str, metrics: ServerMetrics) -> Self {
        let names = described_methods(service);
        let known = names
            .iter()
            .flatten()
            .map(|method| {
                (
                    format!("/{service}/{method}").into_boxed_str(),
                    Arc::new(Method::new(service, method, &metrics)),
                )
            })
            .collect();
        Self {
            service,
            known,
            dynamic: names.is_none().then(Mutex::default),
            unknown: Arc::new(Method::new(service, "unknown", &metrics)),
            metrics,
        }
    }

    fn get(&self, path: &str) -> Arc<Method> {
        if let Some(method) = self.known.get(path) {
            return method.clone();
        }
        let (Some(dynamic), Some((service, method))) = (&self.dynamic, split_path(path)) else {
            return self.unknown.clone();
        };
        if service != self.service {
            return self.unknown.clone();
        }
        let mut dynamic = dynamic.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = dynamic.get(path) {
            return found.clone();
        }
        if dynamic.len() >= MAX_DYNAMIC_METHODS {
            return self.unknown.clone();
        }
        let created = Arc::new(Method::new(self.service, method, &self.metrics));
        dynamic.insert(path.into(), created.clone());
        created
    }
}

/// The method names of `service` in the mesh's descriptor set.
fn described_methods(service: &str) -> Option<Vec<String>> {
    let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).ok()?;
    set.file.iter().find_map(|file| {
        let package = file.package();
        file.service.iter().find_map(|described| {
            let full = if package.is_empty() {
                described.name().to_owned()
            } else {
                format!("{package}.{}", described.name())
            };
            (full == service).then(|| {
                described
                    .method
                    .iter()
                    .map(|method| method.name().to_owned())
                    .collect()
            })
        })
    })
}

/// Whether a server answering `code` failed (OTel's rule for server spans:
/// client mistakes such as NOT_FOUND are not server errors).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// Records one RPC's outcome once: at the status, or when the body is dropped.
struct Outcome {
    method: Arc<Method>,
    started_at: Instant,
    span: Span,
    recorded: bool,
}

impl Outcome {
    fn record(&mut self, code: Code) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        self.method.handled(code).inc();
        self.method
            .handling
            .observe(self.started_at.elapsed().as_secs_f64());
        if !self.span.is_disabled() {
            self.span.record("rpc.grpc.status_code", code as i64);
            if is_server_error(code) {
                self.span
                    .set_status(opentelemetry::trace::Status::error(grpc_code_name(code)));
            }
        }
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started_at = Instant::now();
        let method = self.methods.get(request.uri().path());
        method.started.inc();
        let span = tracing::info_span!(
            target: RPC_TARGET,
            "grpc.server",
            otel.name = &*method.span_name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = method.service,
            rpc.method = &*method.method,
            rpc.grpc.status_code = Empty,
            trace_id = Empty,
            peer.service = Empty,
            enduser.id = Empty,
        );
        if let Some(peer) = request.extensions().get::<crate::connect::PeerIdentity>() {
            span.record("peer.service", &*peer.identity.service);
            if peer.identity.service == crate::caller::EDGE_IDENTITY {
                // The end user the gateway vouches for (believed from it only).
                if let Some(subject) = request
                    .headers()
                    .get(crate::caller::SUBJECT_HEADER)
                    .and_then(|value| value.to_str().ok())
                {
                    span.record("enduser.id", subject);
                }
            }
        }
        if !span.is_disabled() {
            let parent = traces::extract(request.headers());
            let _ = span.set_parent(parent);
            if let Some(trace_id) = traces::trace_id(&span) {
                span.record("trace_id", tracing::field::display(&trace_id));
            }
        }
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let mut outcome = Outcome {
            method,
            started_at,
            span: span.clone(),
            recorded: false,
        };
        Box::pin(
            async move {
                let response = match future.await {
                    Ok(response) => response,
                    Err(error) => {
                        outcome.record(Code::Unknown);
                        return Err(error);
                    }
                };
                if let Some(code) = grpc_status(response.headers()) {
                    // Trailers-only: the status is already here.
                    outcome.record(code);
                    return Ok(response.map(Body::new));
                }
                Ok(response.map(|body| {
                    Body::new(ObservedBody {
                        inner: body,
                        outcome,
                    })
                }))
            }
            .instrument(span),
        )
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the RPC's status from its trailers.
    struct ObservedBody<B>
    where
        B: HttpBody,
    {
        #[pin]
        inner: B,
        outcome: Outcome,
    }

    impl<B> PinnedDrop for ObservedBody<B>
    where
        B: HttpBody,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !this.outcome.recorded {
                // Ended without trailers: gRPC calls a missing status UNKNOWN;
                // dropped before its end: the client cancelled.
                let code = if this.inner.is_end_stream() { Code::Unknown } else { Code::Cancelled };
                this.outcome.record(code);
            }
        }
    }
}

impl<B> HttpBody for ObservedBody<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = {
            let _entered = this.outcome.span.enter();
            this.inner.poll_frame(cx)
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.outcome
                        .record(grpc_status(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => this.outcome.record(Code::Internal),
            Poll::Ready(None) => this.outcome.record(Code::Unknown),
            Poll::Pending => {}
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

/// Binds `--metrics-listen` (port 0 allowed) and writes the bound address
/// back into `args`, so that Consul advertises the real `metrics_port`.
pub(crate) async fn bind_metrics(
    args: &mut ServiceArgs,
) -> Result<Option<tokio::net::TcpListener>, ServeError> {
    let Some(address) = args.metrics_listen else {
        return Ok(None);
    };
    let bind_error = |source| ServeError::Bind { address, source };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    args.metrics_listen = Some(bound);
    tracing::info!(metrics = %bound, "Prometheus metrics at http://{bound}/metrics");
    Ok(Some(listener))
}

/// Serves `/metrics` on `listener` until the returned guard is dropped.
pub(crate) fn serve_metrics(listener: tokio::net::TcpListener) -> AbortOnDrop {
    let task = tokio::spawn(async move {
        if let Err(error) = crate::telemetry::metrics::serve(listener).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
    AbortOnDrop(task.abort_handle())
}

/// Aborts a task when dropped: the metrics server ends with `serve`, on every path.
pub(crate) struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, TraceId};
    use prometheus_client::registry::Registry;
    use tower::ServiceExt;

    use super::*;
    use crate::telemetry::traces::testing::{capture, Captured};

    const USERS: &str = "mesh.users.v1.Users";

    fn request(path: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(format!("http://localhost{path}"))
            .body(Body::empty())
            .unwrap()
    }

    /// A body with one message and `grpc-status: code` in its trailers.
    fn streamed(code: Code) -> http::Response<Body> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", (code as i32).into());
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers)),
        ];
        http::Response::new(Body::new(http_body_util::StreamBody::new(
            futures::stream::iter(frames),
        )))
    }

    fn observed(
        answer: impl Fn(&str) -> http::Response<Body> + Clone + Send + 'static,
    ) -> (
        Observe<
            impl Service<
                    http::Request<Body>,
                    Response = http::Response<Body>,
                    Error = Infallible,
                    Future = impl Send,
                > + Clone,
        >,
        Registry,
    ) {
        let mut registry = Registry::default();
        let metrics = ServerMetrics::new(&mut registry);
        let inner = tower::service_fn(move |request: http::Request<Body>| {
            let answer = answer.clone();
            async move { Ok::<_, Infallible>(answer(request.uri().path())) }
        });
        (Observe::with_metrics(inner, USERS, metrics), registry)
    }

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn counts_trailers_and_trailers_only_statuses_per_method() {
        let (service, registry) = observed(|path| {
            if path.ends_with("GetUser") {
                tonic::Status::not_found("no such user").into_http()
            } else {
                streamed(Code::Ok)
            }
        });
        let before = text(&registry);
        assert!(
            before.contains(r#"grpc_server_started_total{grpc_service="mesh.users.v1.Users",grpc_method="ListUsers"} 0"#),
            "the described methods exist from the start:\n{before}"
        );
        for _ in 0..3 {
            let response = service
                .clone()
                .oneshot(request("/mesh.users.v1.Users/GetUser"))
                .await
                .unwrap();
            assert_eq!(grpc_status(response.headers()), Some(Code::NotFound));
        }
        for _ in 0..2 {
            let response = service
                .clone()
                .oneshot(request("/mesh.users.v1.Users/CreateUser"))
                .await
                .unwrap();
            let collected = response.into_body().collect().await.unwrap();
            assert_eq!(grpc_status(collected.trailers().unwrap()), Some(Code::Ok));
        }
        let text = text(&registry);
        for line in [
            r#"grpc_server_started_total{grpc_service="mesh.users.v1.Users",grpc_method="GetUser"} 3"#,
            r#"grpc_server_handled_total{grpc_service="mesh.users.v1.Users",grpc_method="GetUser",grpc_code="NOT_FOUND"} 3"#,
            r#"grpc_server_started_total{grpc_service="mesh.users.v1.Users",grpc_method="CreateUser"} 2"#,
            r#"grpc_server_handled_total{grpc_service="mesh.users.v1.Users",grpc_method="CreateUser",grpc_code="OK"} 2"#,
            r#"grpc_server_handling_seconds_count{grpc_service="mesh.users.v1.Users",grpc_method="CreateUser"} 2"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_trailers_is_cancelled_and_unknown_methods_share_a_label() {
        let (service, registry) = observed(|_| streamed(Code::Ok));
        let response = service
            .clone()
            .oneshot(request("/mesh.users.v1.Users/GetUser"))
            .await
            .unwrap();
        drop(response);
        let response = service
            .clone()
            .oneshot(request("/mesh.users.v1.Users/Nope"))
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
        let text = text(&registry);
        for line in [
            r#"grpc_server_handled_total{grpc_service="mesh.users.v1.Users",grpc_method="GetUser",grpc_code="CANCELLED"} 1"#,
            r#"grpc_server_handled_total{grpc_service="mesh.users.v1.Users",grpc_method="unknown",grpc_code="OK"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn the_server_span_continues_the_callers_trace() {
        let (dispatch, captured, provider) = capture();
        let _default = tracing::dispatcher::set_default(&dispatch);
        let (service, _registry) = observed(|_| {
            let trace_id = tracing::Span::current()
                .context()
                .span()
                .span_context()
                .trace_id();
            tracing::info!(%trace_id, "handling");
            tonic::Status::unavailable("down").into_http()
        });
        let mut call = request("/mesh.users.v1.Users/GetUser");
        call.headers_mut().insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let response = service.oneshot(call).await.unwrap();
        drop(response);
        provider.force_flush().unwrap();
        let spans = captured.spans();
        assert_eq!(spans.len(), 1, "{spans:#?}");
        let span = &spans[0];
        assert_eq!(span.name, "mesh.users.v1.Users/GetUser");
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(
            span.span_context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            span.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert!(span.parent_span_is_remote);
        for (key, value) in [
            ("rpc.system", "grpc"),
            ("rpc.service", USERS),
            ("rpc.method", "GetUser"),
            ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ] {
            assert_eq!(
                Captured::attribute(span, key)
                    .map(|v| v.to_string())
                    .as_deref(),
                Some(value),
                "{key}"
            );
        }
        assert_eq!(
            Captured::attribute(span, "rpc.grpc.status_code")
                .map(|v| v.to_string())
                .as_deref(),
            Some("14")
        );
        assert!(matches!(
            span.status,
            opentelemetry::trace::Status::Error { .. }
        ));
        // The handler ran inside the span: its event is on the span.
        assert_eq!(span.events.len(), 1);
    }
}
