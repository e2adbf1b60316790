//! `GET /`: a small static shop page that uses the REST API like any other
//! client — items with their stock and price, an order button, the user's
//! orders and their status. It signs in with a token in the URL's fragment
//! (`#token=…&skus=…`, which browsers never send to a server), as the link
//! `mesh up` prints.

use http::{header, HeaderValue};
use tonic::body::Body;

const INDEX: &str = include_str!("index.html");

/// The page.
pub fn index() -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(
        bytes::Bytes::from_static(INDEX.as_bytes()),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Only this page's own script and the same-origin API.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'self'"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
