//! One REST call: route → authenticate → rate-limit → deadline → body →
//! request message → owner check → the mesh → JSON, each refusal an
//! [`ApiError`] with the HTTP status its cause calls for.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use prost::Message as _;
use prost_reflect::DynamicMessage;
use tokio::time::Instant;
use tonic::{body::Body, Code};

use crate::{
    api::{BodyTarget, RouteError},
    auth::{self, AuthError},
    errors::ApiError,
    exchange::{Exchange, Gateway},
    protect::rate::CallerKey,
    transcode::{request, response, RequestError},
};

/// Serves a REST request; `exchange` collects what the access log and the
/// metrics report.
pub(crate) async fn serve(
    gateway: &Gateway,
    request: http::Request<Body>,
    exchange: &Exchange,
) -> http::Response<Body> {
    match call(gateway, request, exchange).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn call(
    gateway: &Gateway,
    request: http::Request<Body>,
    exchange: &Exchange,
) -> Result<http::Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let found = gateway
        .api
        .router()
        .route(&parts.method, path)
        .map_err(|error| match error {
            RouteError::NotFound => ApiError::no_route(&parts.method, path),
            RouteError::MethodNotAllowed(allowed) => {
                ApiError::method_not_allowed(&parts.method, path, &allowed)
            }
        })?;
    let binding = found.binding();
    exchange.update(|e| e.route = binding.template.text.clone());
    let method = &found.method;

    let subject = match auth::authenticate(
        &gateway.auth,
        &method.access,
        parts.headers.get(header::AUTHORIZATION),
    ) {
        Ok(subject) => subject,
        Err(error) => {
            // A refused token costs the address's (stricter) budget.
            gateway.rate_limit(&CallerKey::Address(exchange.client()))?;
            return Err(unauthenticated(&error));
        }
    };
    exchange.update(|e| e.subject = subject.as_ref().map(|subject| subject.0.clone()));
    let caller = match &subject {
        Some(subject) => CallerKey::Subject(subject.0.clone()),
        None => CallerKey::Address(exchange.client()),
    };
    gateway.rate_limit(&caller)?;
    let timeout = gateway
        .deadlines
        .of(&parts.headers)
        .map_err(ApiError::bad_request)?;
    let deadline = Instant::now() + timeout;

    if !matches!(binding.body, BodyTarget::None) {
        check_content_type(&parts.headers)?;
    }
    let body = read_body(
        body,
        gateway.limits.max_body_bytes,
        &parts.headers,
        deadline,
    )
    .await?;
    let message = request::build(
        &method.descriptor.input(),
        binding,
        &found.path_values,
        parts.uri.query(),
        &body,
    )
    .map_err(request_error)?;
    auth::check_subject(&method.access, &message, subject.as_ref()).map_err(|error| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            error.to_string(),
        )
    })?;

    let remaining = deadline.saturating_duration_since(Instant::now());
    let answer = tokio::time::timeout(
        remaining,
        gateway.upstreams.call(
            method,
            Bytes::from(message.encode_to_vec()),
            subject.as_ref(),
            remaining,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {}",
            show(timeout)
        )))
    });
    let encoded = match answer {
        Ok(encoded) => {
            exchange.update(|e| e.code = Some(Code::Ok));
            encoded
        }
        Err(status) => {
            exchange.update(|e| e.code = Some(status.code()));
            return Err(ApiError::from_status(&status, gateway.api.pool()));
        }
    };
    let reply = DynamicMessage::decode(method.descriptor.output(), encoded).map_err(|error| {
        tracing::error!(method = %method.grpc_path, %error, "the service's answer does not decode");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            Code::Internal,
            "the service's answer could not be decoded",
        )
    })?;
    let json = response::to_json(&reply, binding.response_body.as_ref()).map_err(|error| {
        tracing::error!(method = %method.grpc_path, %error, "the service's answer does not serialize");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, "the answer could not be written as JSON")
    })?;
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(json)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// 401 with the RFC 6750 challenge.
pub(crate) fn unauthenticated(error: &AuthError) -> ApiError {
    let challenge = match error {
        AuthError::Missing | AuthError::NotBearer => "Bearer realm=\"mesh\"".to_owned(),
        _ => "Bearer realm=\"mesh\", error=\"invalid_token\"".to_owned(),
    };
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        Code::Unauthenticated,
        error.to_string(),
    )
    .with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).expect("an ASCII challenge"),
    )
}

fn request_error(error: RequestError) -> ApiError {
    match error {
        RequestError::UnsupportedMediaType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            error.to_string(),
        ),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// A body, if any, must be JSON (`application/json`, parameters allowed).
fn check_content_type(headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(request_error(RequestError::UnsupportedMediaType(
        crate::bounded(text),
    )))
}

/// The body, at most `max` bytes (413 beyond), arrived before `deadline` (408 after).
async fn read_body(
    body: Body,
    max: usize,
    headers: &http::HeaderMap,
    deadline: Instant,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            format!("the request body is larger than {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout_at(deadline, Limited::new(body, max).collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            Code::DeadlineExceeded,
            "the request body did not arrive before the request's deadline",
        )),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(error)) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {error}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn show(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}
