//! gRPC and gRPC-Web on the gateway's port (gRPC-Web translated by
//! tonic-web): a call of an exposed method is authenticated, rate-limited,
//! given its deadline and forwarded as it came — the message bytes, not
//! re-encoded — to the service through the mesh. Any other path, including
//! every internal RPC, is refused with HTTP 404 (which gRPC clients read as
//! UNIMPLEMENTED) and `grpc-status: 12` saying the method is not exposed:
//! the gateway's own allow-list, whatever the intentions behind it allow.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use prost_reflect::DynamicMessage;
use tonic::{body::Body, server::UnaryService, Code, Status};

use crate::{
    api::ExposedMethod,
    auth::{self, Subject},
    codec::BytesCodec,
    exchange::{Exchange, Gateway},
    protect::rate::{retry_after_seconds, CallerKey},
};

/// The gRPC side of the gateway as a tower service (wrapped by tonic-web).
#[derive(Clone)]
pub(crate) struct GrpcProxy {
    pub(crate) gateway: Arc<Gateway>,
}

impl tower::Service<http::Request<Body>> for GrpcProxy {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let gateway = self.gateway.clone();
        Box::pin(async move { Ok(serve(&gateway, request).await) })
    }
}

async fn serve(gateway: &Arc<Gateway>, request: http::Request<Body>) -> http::Response<Body> {
    let outcome = request
        .extensions()
        .get::<Exchange>()
        .cloned()
        .unwrap_or_default();
    let path = request.uri().path().to_owned();
    let Some(method) = gateway.api.by_grpc_path(&path).cloned() else {
        return not_exposed(&path);
    };
    outcome.update(|o| o.route = method.grpc_path.clone());
    let client = outcome.client();
    let subject = match auth::authenticate(
        &gateway.auth,
        &method.access,
        request.headers().get(http::header::AUTHORIZATION),
    ) {
        Ok(subject) => subject,
        Err(error) => {
            if gateway.rate_limit(&CallerKey::Address(client)).is_err() {
                return refuse(
                    &outcome,
                    Status::resource_exhausted("rate limit exceeded for this caller"),
                );
            }
            return refuse(&outcome, Status::unauthenticated(error.to_string()));
        }
    };
    outcome.update(|o| o.subject = subject.as_ref().map(|s| s.0.clone()));
    let key = match &subject {
        Some(subject) => CallerKey::Subject(subject.0.clone()),
        None => CallerKey::Address(client),
    };
    if let Err(wait) = gateway.rates.check(&key) {
        let mut status = Status::resource_exhausted(format!(
            "rate limit exceeded for this caller; retry in {} s",
            retry_after_seconds(wait)
        ));
        // gRPC A6: the client's retry waits at least this long.
        if let Ok(value) = wait.as_millis().to_string().parse() {
            status
                .metadata_mut()
                .insert("grpc-retry-pushback-ms", value);
        }
        return refuse(&outcome, status);
    }
    let timeout = match gateway.deadlines.of(request.headers()) {
        Ok(timeout) => timeout,
        Err(message) => return refuse(&outcome, Status::invalid_argument(message)),
    };
    let call = Forward {
        gateway: gateway.clone(),
        method,
        subject,
        timeout,
        outcome: outcome.clone(),
    };
    let mut grpc = tonic::server::Grpc::new(BytesCodec).apply_max_message_size_config(
        Some(gateway.limits.max_body_bytes),
        Some(mesh::limits::MAX_MESSAGE_BYTES),
    );
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, grpc.unary(call, request)).await {
        Ok(response) => response,
        Err(_) => refuse(
            &outcome,
            Status::deadline_exceeded("the call did not finish within its deadline"),
        ),
    }
}

/// One forwarded call.
#[derive(Clone)]
struct Forward {
    gateway: Arc<Gateway>,
    method: Arc<ExposedMethod>,
    subject: Option<Subject>,
    timeout: std::time::Duration,
    outcome: Exchange,
}

impl UnaryService<Bytes> for Forward {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let bytes = request.into_inner();
            if this.method.access.subject_field.is_some() {
                let message = DynamicMessage::decode(this.method.descriptor.input(), bytes.clone())
                    .map_err(|error| {
                        Status::invalid_argument(format!("the request does not decode: {error}"))
                    })?;
                auth::check_subject(&this.method.access, &message, this.subject.as_ref())
                    .map_err(|error| Status::permission_denied(error.to_string()))?;
            }
            let answer = this
                .gateway
                .upstreams
                .call(&this.method, bytes, this.subject.as_ref(), this.timeout)
                .await;
            this.outcome.update(|o| {
                o.code = Some(match &answer {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                })
            });
            answer.map(tonic::Response::new)
        })
    }
}

/// The status as a gRPC answer, noted for the access log.
fn refuse(outcome: &Exchange, status: Status) -> http::Response<Body> {
    outcome.update(|o| o.code = Some(status.code()));
    status.into_http()
}

/// HTTP 404 with `grpc-status: 12` (UNIMPLEMENTED) for a method the gateway
/// does not expose.
fn not_exposed(path: &str) -> http::Response<Body> {
    let status = Status::unimplemented(format!(
        "{} is not exposed by the gateway",
        crate::bounded(path)
    ));
    let mut response = status.into_http::<Body>();
    *response.status_mut() = http::StatusCode::NOT_FOUND;
    response
}
