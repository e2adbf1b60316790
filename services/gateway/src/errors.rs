//! Errors the HTTP way: a gRPC status → an HTTP status (the table of
//! grpc-gateway and Google APIs) and a `google.rpc.Status` JSON body with its
//! details as proto3 JSON (`@type` and the detail's fields), for the
//! services' answers and for the gateway's own refusals alike.

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use tonic::Code;

/// The HTTP status of a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // 499 Client Closed Request (nginx's), as grpc-gateway answers.
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer: the HTTP status, the gRPC code and message, details
/// already rendered as JSON, and extra headers (`Allow`, `Retry-After`,
/// `WWW-Authenticate`).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The gRPC code in the body.
    pub code: Code,
    /// The message (bounded as every status message of the mesh).
    pub message: String,
    /// `details` of the body.
    pub details: Vec<serde_json::Value>,
    /// Extra response headers.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with `status` and the gRPC `code` the body names.
    pub fn new(status: StatusCode, code: Code, message: impl AsRef<str>) -> Self {
        Self {
            status,
            code,
            message: mesh::bounded::message(message.as_ref()),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// 400 INVALID_ARGUMENT.
    pub fn bad_request(message: impl AsRef<str>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
    }

    /// 404 NOT_FOUND for a path no route serves.
    pub fn no_route(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!(
                "no API route for {method} {} (see GET /openapi.json)",
                crate::bounded(path)
            ),
        )
    }

    /// 405 with `Allow`.
    pub fn method_not_allowed(method: &http::Method, path: &str, allowed: &[http::Method]) -> Self {
        let list = allowed
            .iter()
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut error = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unimplemented,
            format!(
                "{method} is not allowed on {}; allowed: {list}",
                crate::bounded(path)
            ),
        );
        if let Ok(value) = HeaderValue::from_str(&list) {
            error.headers.push((header::ALLOW, value));
        }
        error
    }

    /// Adds a header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A service's (or the mesh client's) status, with its details decoded
    /// with the descriptors of `pool`.
    pub fn from_status(status: &tonic::Status, pool: &DescriptorPool) -> Self {
        let mut error = Self::new(http_status(status.code()), status.code(), status.message());
        error.details = details(status.details(), pool);
        error
    }

    /// The `google.rpc.Status` JSON body.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "code": self.code as i32,
            "message": self.message,
            "details": self.details,
        });
        Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"))
    }

    /// The whole response.
    pub fn into_response(self) -> http::Response<tonic::body::Body> {
        let body = self.body();
        let mut response =
            http::Response::new(tonic::body::Body::new(http_body_util::Full::new(body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        response
    }
}

/// At most this many details are rendered (the services bound theirs too).
const MAX_DETAILS: usize = 8;

/// The details of an encoded `google.rpc.Status` (tonic's
/// `grpc-status-details-bin`) as proto3 JSON; an undecodable detail is
/// rendered with its type URL only.
fn details(encoded: &[u8], pool: &DescriptorPool) -> Vec<serde_json::Value> {
    if encoded.is_empty() {
        return Vec::new();
    }
    let Some(descriptor) = pool.get_message_by_name("google.rpc.Status") else {
        return Vec::new();
    };
    let Ok(status) = DynamicMessage::decode(descriptor, encoded) else {
        return Vec::new();
    };
    let options = SerializeOptions::new();
    let mut serializer = serde_json::Serializer::new(Vec::new());
    if status
        .serialize_with_options(&mut serializer, &options)
        .is_err()
    {
        // An Any of a type the pool does not know: keep the type URLs.
        return raw_type_urls(encoded);
    }
    let Ok(serde_json::Value::Object(mut object)) =
        serde_json::from_slice(&serializer.into_inner())
    else {
        return Vec::new();
    };
    match object.remove("details") {
        Some(serde_json::Value::Array(mut list)) => {
            list.truncate(MAX_DETAILS);
            list
        }
        _ => Vec::new(),
    }
}

fn raw_type_urls(encoded: &[u8]) -> Vec<serde_json::Value> {
    use prost::Message as _;
    tonic_types::pb::Status::decode(encoded)
        .map(|status| {
            status
                .details
                .into_iter()
                .take(MAX_DETAILS)
                .map(|any| serde_json::json!({ "@type": any.type_url }))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    #[test]
    fn codes_map_like_grpc_gateway() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
            (Code::Ok, 200),
        ];
        for (code, expected) in table {
            assert_eq!(http_status(code).as_u16(), expected, "{code:?}");
        }
    }

    #[test]
    fn field_violations_become_proto3_json_details() {
        let pool = crate::api::Api::load(&[]).unwrap().pool().clone();
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("email", "must contain @");
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "invalid CreateUserRequest",
            details,
        );
        let error = ApiError::from_status(&status, &pool);
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "code": 3,
                "message": "invalid CreateUserRequest",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "email", "description": "must contain @"}]
                }]
            })
        );
    }

    #[test]
    fn messages_are_bounded_and_405_lists_the_verbs() {
        let error = ApiError::bad_request("x".repeat(10_000));
        assert!(
            error.message.len() <= mesh::limits::MAX_STATUS_MESSAGE_BYTES,
            "{}",
            error.message.len()
        );
        let error = ApiError::method_not_allowed(
            &http::Method::PUT,
            "/v1/orders",
            &[http::Method::GET, http::Method::POST],
        );
        assert_eq!(error.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(error.headers[0].1, "GET, POST");
    }
}
