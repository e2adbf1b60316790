//! What operators see: one trace from the client's `traceparent` through
//! the gateway into the mesh, one JSON access-log line per request (never
//! the token), HTTP metrics with OpenTelemetry's names.

use std::{collections::BTreeSet, time::Duration};

use serde_json::json;
use testkit::otlp::{Collector, Received, SpanKind};

use crate::common::{curl, curl_as, Shop};

const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
const CLIENT_SPAN: &str = "eee19b7ec3c1b174";

/// curl → gateway → orders → users, inventory, payments: one trace.
pub async fn one_trace_from_curl_through_the_gateway_to_payments(
    shop: &Shop,
    collector: &Collector,
) {
    let alice = tokio::task::block_in_place(|| shop.sign_up("alice-trace"));
    let token = shop.token(&alice);
    let body = json!({"requestId": "trace-1", "userId": alice, "items": [{"sku": "WIDGET-1", "quantity": 1}]});
    let placed = tokio::task::block_in_place(|| {
        curl_as(
            &token,
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-H",
                &format!("traceparent: 00-{TRACE_ID}-{CLIENT_SPAN}-01"),
                "-d",
                &body.to_string(),
                &shop.url("/v1/orders"),
            ],
        )
    });
    assert_eq!(placed.status, 200, "{placed:?}");

    let trace = collector
        .wait_for(
            "server spans of the gateway, orders, users, inventory and payments in the trace",
            |spans| {
                let trace: Vec<Received> = spans
                    .iter()
                    .filter(|span| span.trace_id == TRACE_ID)
                    .cloned()
                    .collect();
                let served: BTreeSet<&str> = trace
                    .iter()
                    .filter(|span| span.is(SpanKind::Server))
                    .map(|span| span.service.as_str())
                    .collect();
                ["gateway", "orders", "users", "inventory", "payments"]
                    .iter()
                    .all(|service| served.contains(service))
                    .then_some(trace)
            },
        )
        .await;
    let server = |service: &str| {
        trace
            .iter()
            .find(|span| span.service == service && span.is(SpanKind::Server))
            .unwrap_or_else(|| panic!("no {service} server span in {trace:#?}"))
    };
    let edge = server("gateway");
    assert_eq!(
        edge.parent_span_id, CLIENT_SPAN,
        "the gateway continues curl's trace: {edge:?}"
    );
    assert_eq!(edge.name, "POST /v1/orders");
    assert_eq!(edge.attributes["http.route"], "/v1/orders");
    assert_eq!(edge.attributes["http.request.method"], "POST");
    assert_eq!(edge.attributes["http.response.status_code"], "200");
    assert_eq!(edge.attributes["enduser.id"], alice.as_str());
    let orders = trace
        .iter()
        .find(|span| {
            span.service == "orders"
                && span.is(SpanKind::Server)
                && span.name == "mesh.orders.v1.Orders/PlaceOrder"
        })
        .unwrap_or_else(|| panic!("no PlaceOrder span in {trace:#?}"));
    let parent = trace
        .iter()
        .find(|span| span.span_id == orders.parent_span_id)
        .unwrap_or_else(|| panic!("the parent of {orders:?} is not in the trace"));
    assert_eq!(parent.service, "gateway", "{parent:?}");
    assert!(
        parent.is(SpanKind::Client),
        "the gateway's mesh call: {parent:?}"
    );
    assert_eq!(parent.parent_span_id, edge.span_id);
    assert_eq!(
        orders.attributes["enduser.id"],
        alice.as_str(),
        "the subject is on the orders span"
    );
    assert_eq!(orders.attributes["peer.service"], "gateway");
}

/// The access log has a JSON line per request with the route template, the
/// status, the latency, the trace id and the subject, and never the token;
/// `/metrics` has `http_server_request_duration_seconds` by route, method
/// and status.
pub fn an_access_log_line_per_request_and_http_metrics(shop: &Shop) {
    let alice = shop.sign_up("alice-log");
    let token = shop.token(&alice);
    let trace_id = "6e0c63257de34c92bf9efcd03927272e";
    let read = curl_as(
        &token,
        &[
            "-H",
            &format!("traceparent: 00-{trace_id}-0102030405060708-01"),
            &shop.url(&format!("/v1/users/{alice}")),
        ],
    );
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(curl(&[&shop.url("/v1/nowhere")]).status, 404);

    let line = testkit::wait_until(
        "the access-log line of GET /v1/users/{user_id}",
        Duration::from_secs(10),
        || {
            shop.gateway
                .child
                .log()
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|line| line["trace_id"] == trace_id)
        },
    );
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["route"], "/v1/users/{user_id}", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["grpc_status"], 0, "{line}");
    assert_eq!(line["subject"], alice.as_str(), "{line}");
    assert_eq!(line["protocol"], "rest", "{line}");
    assert_eq!(line["client"], "127.0.0.1", "{line}");
    assert!(
        line["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{line}"
    );
    assert!(
        line["time"]
            .as_str()
            .is_some_and(|time| time.ends_with('Z')),
        "{line}"
    );
    let log = shop.gateway.child.log();
    assert!(!log.contains(&token), "a token is in the gateway's log");
    assert!(
        !log.contains(&token[token.len() - 20..]),
        "part of a token is in the gateway's log"
    );

    let metrics = curl(&[&format!("http://{}/metrics", shop.metrics)]);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("# TYPE http_server_request_duration_seconds histogram"),
        "{}",
        metrics.body
    );
    let ok = count(
        &metrics.body,
        r#"http_request_method="GET",http_route="/v1/users/{user_id}",http_response_status_code="200""#,
    );
    assert!(
        ok >= 1.0,
        "no 200 of GET /v1/users/{{user_id}} in:\n{}",
        metrics.body
    );
    let unmatched = count(
        &metrics.body,
        r#"http_request_method="GET",http_route="",http_response_status_code="404""#,
    );
    assert!(
        unmatched >= 1.0,
        "the 404 is counted without a route:\n{}",
        metrics.body
    );
}

/// The `_count` of the histogram series with exactly these labels.
fn count(text: &str, labels: &str) -> f64 {
    let prefix = format!("http_server_request_duration_seconds_count{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}
