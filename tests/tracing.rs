//! Distributed traces, received by an in-test OTLP/gRPC collector (the
//! collector's `TraceService`, served with the project's own tonic):
//!
//! - one PlaceOrder is one trace across four real processes: the `orders`
//!   server span is the root, its client spans (one per call to users,
//!   inventory and payments, through the mesh client) are its children, and
//!   the server span of each callee is the child of one of those client spans;
//! - a caller's `traceparent` is continued by the server span, and the
//!   service's JSON log lines written inside the RPC carry that trace id.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use mesh::proto::{
    inventory::v1::{inventory_client::InventoryClient, AddStockRequest},
    orders::v1::{orders_client::OrdersClient, OrderLine, PlaceOrderRequest},
    users::v1::{users_client::UsersClient, CreateUserRequest},
};
use testkit::{
    otlp::{Collector, Received, SpanKind},
    ConsulAgent, ServiceOptions, ServiceProcess,
};

/// Starts `name` registered in `agent`, exporting its spans to `collector`.
fn start(name: &str, agent: &ConsulAgent, collector: &str, args: &[&str]) -> ServiceProcess {
    ServiceProcess::start(
        name,
        ServiceOptions {
            consul: Some(agent.http_addr()),
            args: ["--check-interval", "500"]
                .iter()
                .chain(args)
                .map(|arg| (*arg).to_owned())
                .collect(),
            env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.to_owned()),
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
            ],
            ..ServiceOptions::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_place_order_is_one_trace_across_four_services() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let agent = ConsulAgent::start();
    let users = start("users", &agent, &endpoint, &[]);
    let inventory = start("inventory", &agent, &endpoint, &[]);
    let payments = start("payments", &agent, &endpoint, &[]);
    let orders = start("orders", &agent, &endpoint, &[]);
    for name in ["users", "inventory", "payments", "orders"] {
        agent.wait_passing(name, 1, Duration::from_secs(30));
    }

    let user_id = UsersClient::connect(format!("http://{}", users.addr()))
        .await
        .expect("connect users")
        .create_user(CreateUserRequest {
            email: "grace@example.org".into(),
            display_name: "Grace".into(),
        })
        .await
        .expect("create user")
        .into_inner()
        .user_id;
    InventoryClient::connect(format!("http://{}", inventory.addr()))
        .await
        .expect("connect inventory")
        .add_stock(AddStockRequest {
            sku: "TEA".into(),
            quantity: 10,
            unit_price_cents: 450,
            currency: "EUR".into(),
        })
        .await
        .expect("add stock");
    let order = OrdersClient::connect(format!("http://{}", orders.addr()))
        .await
        .expect("connect orders")
        .place_order(PlaceOrderRequest {
            request_id: "trace-order-1".into(),
            user_id,
            items: vec![OrderLine {
                sku: "TEA".into(),
                quantity: 2,
                unit_price_cents: 0,
            }],
            currency: "EUR".into(),
        })
        .await
        .unwrap_or_else(|status| {
            panic!(
                "PlaceOrder: {status:?}\norders log:\n{}",
                orders.child.log()
            )
        })
        .into_inner();
    assert!(!order.payment_id.is_empty(), "{order:?}");

    // The root: the orders server span of PlaceOrder (no parent).
    let root = collector
        .wait_for("the PlaceOrder server span", |spans| {
            spans
                .iter()
                .find(|span| {
                    span.service == "orders"
                        && span.is(SpanKind::Server)
                        && span.name == "mesh.orders.v1.Orders/PlaceOrder"
                })
                .cloned()
        })
        .await;
    assert_eq!(
        root.parent_span_id, "",
        "PlaceOrder was called without a trace: it is the root"
    );
    assert_eq!(root.attributes["rpc.system"], "grpc");
    assert_eq!(root.attributes["rpc.service"], "mesh.orders.v1.Orders");
    assert_eq!(root.attributes["rpc.method"], "PlaceOrder");
    assert_eq!(root.attributes["rpc.grpc.status_code"], "0");
    assert_eq!(root.resource["service.instance.id"], orders.instance_id);
    assert_eq!(root.resource["service.version"], env!("CARGO_PKG_VERSION"));

    // Every callee's server span arrives in the same trace.
    let trace_id = root.trace_id.clone();
    let trace = collector
        .wait_for(
            "the server spans of users, inventory and payments in the trace",
            move |spans| {
                let trace: Vec<Received> = spans
                    .iter()
                    .filter(|span| span.trace_id == trace_id)
                    .cloned()
                    .collect();
                let served: BTreeSet<&str> = trace
                    .iter()
                    .filter(|span| span.is(SpanKind::Server))
                    .map(|span| span.service.as_str())
                    .collect();
                (["users", "inventory", "payments"]
                    .iter()
                    .all(|name| served.contains(name)))
                .then_some(trace)
            },
        )
        .await;

    let client_spans: BTreeMap<&str, &Received> = trace
        .iter()
        .filter(|span| span.is(SpanKind::Client))
        .map(|span| (span.span_id.as_str(), span))
        .collect();
    assert!(
        client_spans.len() >= 3,
        "one client span per upstream call at least: {trace:#?}"
    );
    let ports: BTreeSet<String> = [&users, &inventory, &payments]
        .iter()
        .map(|process| process.port.to_string())
        .collect();
    for client in client_spans.values() {
        assert_eq!(client.service, "orders", "{client:?}");
        assert_eq!(
            client.parent_span_id, root.span_id,
            "orders' client spans are children of its server span: {client:?}"
        );
        assert_eq!(client.attributes["rpc.system"], "grpc");
        assert_eq!(
            client.attributes["server.address"], "127.0.0.1",
            "{client:?}"
        );
        assert!(
            ports.contains(&client.attributes["server.port"]),
            "{client:?}"
        );
        assert!(
            client
                .attributes
                .contains_key("rpc.grpc.previous_rpc_attempts"),
            "{client:?}"
        );
        assert_eq!(client.attributes["rpc.grpc.status_code"], "0", "{client:?}");
    }
    for (service, method) in [
        ("users", "GetUser"),
        ("inventory", "Reserve"),
        ("payments", "Charge"),
    ] {
        let server = trace
            .iter()
            .find(|span| {
                span.service == service
                    && span.is(SpanKind::Server)
                    && span.attributes["rpc.method"] == method
            })
            .unwrap_or_else(|| panic!("no {service} {method} server span in {trace:#?}"));
        let parent = client_spans
            .get(server.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("the parent of {server:?} is not a client span of orders"));
        assert_eq!(parent.attributes["rpc.method"], method);
    }
    assert!(
        trace.iter().all(|span| span.trace_id == root.trace_id),
        "one trace id for the whole PlaceOrder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_traceparent_is_continued_and_logged() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let agent = ConsulAgent::start();
    let users = start("users", &agent, &endpoint, &["--log-format", "json"]);

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let mut request = tonic::Request::new(CreateUserRequest {
        email: "linus@example.org".into(),
        display_name: "Linus".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    UsersClient::connect(format!("http://{}", users.addr()))
        .await
        .expect("connect users")
        .create_user(request)
        .await
        .expect("create user");

    let span = collector
        .wait_for("the CreateUser server span", move |spans| {
            spans.iter().find(|span| span.trace_id == trace_id).cloned()
        })
        .await;
    assert_eq!(span.service, "users");
    assert_eq!(span.name, "mesh.users.v1.Users/CreateUser");
    assert_eq!(span.parent_span_id, caller_span);
    assert!(span.is(SpanKind::Server));
    assert_eq!(span.attributes["rpc.grpc.status_code"], "0");

    // The handler's log line (JSON) names the trace at top level; lines
    // outside any RPC do not.
    let lines: Vec<serde_json::Value> = users
        .child
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let inside: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line.get("trace_id").is_some())
        .collect();
    assert!(!inside.is_empty(), "no line with a trace_id in {lines:#?}");
    assert!(
        inside.iter().all(|line| line["trace_id"] == trace_id),
        "{inside:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.get("trace_id").is_none() && line["message"] == "serving"),
        "startup lines carry no trace id: {lines:#?}"
    );
}

/// Issue 21, "Done when": the trace of one order continues into shipping's
/// consumer. The outbox row keeps the trace context of the transaction that
/// confirmed the order; the relay publishes it as the event's `traceparent`;
/// shipping's `process orders` span (kind consumer, messaging attributes) is
/// its child, in the order's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_of_an_order_continues_into_shippings_consumer() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let agent = ConsulAgent::start();
    let redis = testkit::RedisServer::start();
    let broker = ["--broker-url", &redis.url()].map(str::to_owned);
    let broker: Vec<&str> = broker.iter().map(String::as_str).collect();
    let users = start("users", &agent, &endpoint, &[]);
    let inventory = start("inventory", &agent, &endpoint, &[]);
    let _payments = start("payments", &agent, &endpoint, &[]);
    let orders = start("orders", &agent, &endpoint, &broker);
    let _shipping = start("shipping", &agent, &endpoint, &broker);
    for name in ["users", "inventory", "payments", "orders"] {
        agent.wait_passing(name, 1, Duration::from_secs(30));
    }
    let user_id = UsersClient::connect(format!("http://{}", users.addr()))
        .await
        .expect("connect users")
        .create_user(CreateUserRequest {
            email: "ada@example.org".into(),
            display_name: "Ada".into(),
        })
        .await
        .expect("create user")
        .into_inner()
        .user_id;
    InventoryClient::connect(format!("http://{}", inventory.addr()))
        .await
        .expect("connect inventory")
        .add_stock(AddStockRequest {
            sku: "COFFEE".into(),
            quantity: 10,
            unit_price_cents: 900,
            currency: "EUR".into(),
        })
        .await
        .expect("add stock");
    let order = OrdersClient::connect(format!("http://{}", orders.addr()))
        .await
        .expect("connect orders")
        .place_order(PlaceOrderRequest {
            request_id: "trace-into-shipping".into(),
            user_id,
            items: vec![OrderLine {
                sku: "COFFEE".into(),
                quantity: 1,
                unit_price_cents: 0,
            }],
            currency: "EUR".into(),
        })
        .await
        .expect("place order")
        .into_inner();

    let order_id = order.order_id.clone();
    let consumer = collector
        .wait_for("shipping's span for the order's event", move |spans| {
            spans
                .iter()
                .find(|span| {
                    span.service == "shipping"
                        && span.is(SpanKind::Consumer)
                        && span.attributes.get("cloudevents.event_subject") == Some(&order_id)
                })
                .cloned()
        })
        .await;
    let root = collector
        .wait_for("the PlaceOrder server span", |spans| {
            spans
                .iter()
                .find(|span| {
                    span.service == "orders" && span.name == "mesh.orders.v1.Orders/PlaceOrder"
                })
                .cloned()
        })
        .await;
    assert_eq!(
        consumer.trace_id, root.trace_id,
        "one trace from PlaceOrder into shipping"
    );
    assert_eq!(consumer.name, "process orders");
    assert_eq!(consumer.attributes["messaging.system"], "redis");
    assert_eq!(consumer.attributes["messaging.operation.type"], "process");
    assert_eq!(consumer.attributes["messaging.destination.name"], "orders");
    assert_eq!(
        consumer.attributes["messaging.consumer.group.name"],
        "shipping"
    );
    assert_eq!(
        consumer.attributes["cloudevents.event_type"],
        "mesh.events.v1.OrderConfirmed"
    );
    let spans = collector.spans();
    let parent = spans
        .iter()
        .find(|span| span.span_id == consumer.parent_span_id)
        .unwrap_or_else(|| panic!("the consumer span's parent was not exported: {consumer:?}"));
    assert_eq!(
        parent.service, "orders",
        "its parent is the orders span that committed the event: {parent:?}"
    );
}
