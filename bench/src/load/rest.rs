//! `--gateway URL`: the same RPC as REST/JSON through the API gateway,
//! as a curl-like client sends it — HTTP/1.1 with keep-alive (one pooled
//! connection per worker in flight), a JSON body, a bearer token. Only 2xx
//! answers count as successes; any other answer counts under the gRPC code
//! its `google.rpc.Status` body names.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tonic::Code;

use super::{rpc::Rpc, workers::Call};

/// The SKU `get-item` reads (the gRPC runs' own).
const GET_ITEM_SKU: &str = super::rpc::GET_ITEM_SKU;
/// The SKU `place-order` buys.
const ORDER_SKU: &str = super::rpc::ORDER_SKU;

/// One worker's REST client for the RPC under load.
#[derive(Clone)]
pub(crate) struct RestCaller {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    rpc: Rpc,
    user_id: String,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl RestCaller {
    /// A client of the gateway at `base` (`http://127.0.0.1:8080`) for
    /// `rpc`, as `user_id` with `token`.
    pub(crate) fn new(
        base: &str,
        rpc: Rpc,
        user_id: String,
        token: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            matches!(rpc, Rpc::GetItem | Rpc::PlaceOrder),
            "--via gateway loads get-item and place-order (the RPCs the gateway exposes here), not {}",
            rpc.name()
        );
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::from(u16::MAX))
            .build(connector);
        let authorization = token
            .map(|token| HeaderValue::from_str(&format!("Bearer {token}")))
            .transpose()?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            rpc,
            user_id,
            authorization,
            timeout,
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let (method, path, body) = match self.rpc {
            Rpc::PlaceOrder => (
                Method::POST,
                "/v1/orders".to_owned(),
                serde_json::json!({
                    "requestId": uuid::Uuid::new_v4().to_string(),
                    "userId": self.user_id,
                    "items": [{"sku": ORDER_SKU, "quantity": 1}],
                    "currency": "EUR",
                })
                .to_string(),
            ),
            _ => (
                Method::GET,
                format!("/v1/items/{GET_ITEM_SKU}"),
                String::new(),
            ),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                "x-request-timeout",
                format!("{}ms", self.timeout.as_millis()),
            )
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, authorization.clone());
        }
        request
    }
}

impl Call for RestCaller {
    async fn call(&mut self) -> Result<(), Code> {
        let answer = tokio::time::timeout(self.timeout, async {
            let response = self
                .client
                .request(self.request())
                .await
                .map_err(|_| Code::Unavailable)?;
            let status = response.status();
            // Read the whole body: the connection goes back to the pool.
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| Code::Unavailable)?
                .to_bytes();
            if status.is_success() {
                Ok(())
            } else {
                Err(code_of(status, &body))
            }
        })
        .await;
        answer.unwrap_or(Err(Code::DeadlineExceeded))
    }
}

/// The gRPC code of an error answer: its body's `code`, else from the status.
fn code_of(status: http::StatusCode, body: &Bytes) -> Code {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json["code"].as_i64())
        .and_then(|code| i32::try_from(code).ok())
        .map(Code::from)
        .unwrap_or(match status.as_u16() {
            429 => Code::ResourceExhausted,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            _ => Code::Unknown,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_count_under_their_status_code() {
        let body = Bytes::from_static(br#"{"code":9,"message":"insufficient stock","details":[]}"#);
        assert_eq!(
            code_of(http::StatusCode::BAD_REQUEST, &body),
            Code::FailedPrecondition
        );
        assert_eq!(
            code_of(http::StatusCode::TOO_MANY_REQUESTS, &Bytes::new()),
            Code::ResourceExhausted
        );
        assert!(RestCaller::new(
            "http://127.0.0.1:1",
            Rpc::Charge,
            String::new(),
            None,
            Duration::from_secs(1)
        )
        .is_err());
    }
}
