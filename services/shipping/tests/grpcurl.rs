//! The real `shipping` binary, fed by a real Redis through the events crate
//! (as the orders service's relay publishes), looked at with the real
//! grpcurl: what an operator sees.

use std::time::Duration;

use events::{Broker, BrokerSettings, BrokerUrl, Event, EventBroker};
use mesh::proto::events::v1::{OrderCancelled, OrderConfirmed, OrderLine, OrderRejected};
use prost::Message;
use testkit::{ConsulAgent, RedisServer, ServiceOptions, ServiceProcess};

const SERVICE: &str = "mesh.shipping.v1.Shipping";

/// A Redis, a shipping instance consuming from it, and a runtime to publish.
struct Setup {
    redis: RedisServer,
    shipping: ServiceProcess,
    metrics: String,
    runtime: tokio::runtime::Runtime,
}

impl Setup {
    fn start() -> Self {
        Self::start_with(ServiceOptions::default())
    }

    fn start_with(options: ServiceOptions) -> Self {
        let redis = RedisServer::start();
        let metrics = format!("127.0.0.1:{}", testkit::free_port());
        let shipping = ServiceProcess::start("shipping", with_broker(&redis, &metrics, options));
        Self {
            redis,
            shipping,
            metrics,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn broker(&self) -> Broker {
        let _runtime = self.runtime.enter();
        events::connect(&BrokerSettings::new(
            BrokerUrl::parse(&self.redis.url()).unwrap(),
        ))
        .unwrap()
    }

    fn publish(&self, event: Event) {
        let broker = self.broker();
        self.runtime
            .block_on(broker.publish("orders", &event))
            .expect("publish");
    }

    fn call(&self, method: &str, body: &str) -> testkit::GrpcurlOutput {
        self.shipping.grpcurl_call(SERVICE, method, body)
    }

    /// Waits until `ListShipments` for `order_id` answers `status`.
    fn wait_status(&self, order_id: &str, status: &str) -> serde_json::Value {
        testkit::wait_until(
            &format!("the shipment of {order_id} to be {status}"),
            Duration::from_secs(30),
            || {
                let out = self.call("ListShipments", &format!(r#"{{"order_id":"{order_id}"}}"#));
                let shipments = out.json()["shipments"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                shipments
                    .first()
                    .filter(|shipment| shipment["status"] == status)
                    .cloned()
            },
        )
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        testkit::scrape_metrics(&self.metrics).sum(name, labels)
    }
}

/// `options` plus the broker and a metrics port.
fn with_broker(redis: &RedisServer, metrics: &str, options: ServiceOptions) -> ServiceOptions {
    let mut args = options.args.clone();
    args.extend([
        "--broker-url".to_owned(),
        redis.url(),
        "--event-claim-idle".to_owned(),
        "1s".to_owned(),
        "--metrics-listen".to_owned(),
        metrics.to_owned(),
    ]);
    ServiceOptions { args, ..options }
}

fn event(event_type: &str, order_id: &str, body: Vec<u8>) -> Event {
    Event::protobuf(
        uuid::Uuid::new_v4().to_string(),
        "/mesh/orders",
        event_type,
        order_id,
        mesh::storage::now_unix_ms(),
        body,
    )
}

fn confirmed(order_id: &str, user_id: &str) -> Event {
    let body = OrderConfirmed {
        order_id: order_id.into(),
        user_id: user_id.into(),
        lines: vec![OrderLine {
            sku: "WIDGET-1".into(),
            quantity: 3,
            unit_price_cents: 250,
        }],
        total_cents: 750,
        currency: "EUR".into(),
        payment_id: "pay_1".into(),
        sequence: 1,
        ..OrderConfirmed::default()
    };
    event(
        "mesh.events.v1.OrderConfirmed",
        order_id,
        body.encode_to_vec(),
    )
}

fn cancelled(order_id: &str) -> Event {
    let body = OrderCancelled {
        order_id: order_id.into(),
        user_id: "u_1".into(),
        sequence: 2,
        ..OrderCancelled::default()
    };
    event(
        "mesh.events.v1.OrderCancelled",
        order_id,
        body.encode_to_vec(),
    )
}

#[test]
fn list_shows_shipping_health_and_reflection() {
    let setup = Setup::start();
    testkit::conformance::assert_lists_service_health_and_reflection(&setup.shipping, SERVICE);
}

#[test]
fn describe_shows_the_rpcs() {
    let setup = Setup::start();
    testkit::conformance::assert_describes(
        &setup.shipping,
        SERVICE,
        &["rpc GetShipment", "rpc ListShipments", "rpc MarkShipped"],
    );
}

#[test]
fn a_confirmed_order_gets_one_shipment_whatever_is_redelivered() {
    let setup = Setup::start();
    let confirmation = confirmed("ord_a", "u_ada");
    setup.publish(confirmation.clone());
    // A duplicate publish (same event id), as a relay that died before
    // marking its row would send.
    setup.publish(confirmation);
    let shipment = setup.wait_status("ord_a", "SHIPMENT_STATUS_PENDING");
    assert_eq!(shipment["userId"], "u_ada");
    assert_eq!(shipment["lines"][0]["sku"], "WIDGET-1");
    assert_eq!(shipment["lines"][0]["quantity"], "3");
    let id = shipment["shipmentId"].as_str().unwrap().to_owned();
    let got = setup.call("GetShipment", &format!(r#"{{"shipment_id":"{id}"}}"#));
    assert!(got.success, "{got:?}");
    assert_eq!(got.json(), shipment);
    testkit::wait_until(
        "the duplicate to be counted",
        Duration::from_secs(10),
        || {
            (setup.metric("mesh_events_handled_total", &[("outcome", "duplicate")]) == 1.0)
                .then_some(())
        },
    );
    let by_user = setup.call("ListShipments", r#"{"user_id":"u_ada"}"#);
    assert_eq!(by_user.json()["shipments"].as_array().unwrap().len(), 1);
}

#[test]
fn a_cancel_that_arrives_before_its_confirmation_waits_for_it() {
    let setup = Setup::start();
    setup.publish(cancelled("ord_b"));
    testkit::wait_until(
        "the early cancel to be kept",
        Duration::from_secs(10),
        || {
            (setup.metric("mesh_events_handled_total", &[("outcome", "deferred")]) == 1.0)
                .then_some(())
        },
    );
    let none = setup.call("ListShipments", r#"{"order_id":"ord_b"}"#);
    assert_eq!(
        none.json()["shipments"].as_array().map_or(0, Vec::len),
        0,
        "nothing applied yet"
    );
    setup.publish(confirmed("ord_b", "u_1"));
    setup.wait_status("ord_b", "SHIPMENT_STATUS_CANCELLED");

    // A rejected order takes its sequence number and ships nothing.
    let rejected = OrderRejected {
        order_id: "ord_r".into(),
        user_id: "u_1".into(),
        reason: "out of stock".into(),
        sequence: 1,
        ..OrderRejected::default()
    };
    setup.publish(event(
        "mesh.events.v1.OrderRejected",
        "ord_r",
        rejected.encode_to_vec(),
    ));
    // Applied: the confirmation (with the cancel that waited for it, in its
    // transaction) and the rejection.
    testkit::wait_until(
        "the rejection to be applied",
        Duration::from_secs(10),
        || {
            (setup.metric("mesh_events_handled_total", &[("outcome", "applied")]) == 2.0)
                .then_some(())
        },
    );
    let none = setup.call("ListShipments", r#"{"order_id":"ord_r"}"#);
    assert_eq!(none.json()["shipments"].as_array().map_or(0, Vec::len), 0);
}

#[test]
fn an_event_that_is_not_one_is_dead_lettered_with_a_log_line_and_a_metric_and_the_consumer_goes_on()
{
    let setup = Setup::start();
    setup
        .redis
        .cli(&["XADD", "mesh.events.orders", "*", "colour", "blue"]);
    // Valid attributes, a body that is not an OrderConfirmed.
    setup.publish(event(
        "mesh.events.v1.OrderConfirmed",
        "ord_x",
        vec![0xff, 0xff, 0xff],
    ));
    setup.publish(confirmed("ord_c", "u_1"));
    setup.wait_status("ord_c", "SHIPMENT_STATUS_PENDING");
    testkit::wait_until("both dead letters", Duration::from_secs(10), || {
        let malformed = setup.metric("mesh_events_dead_letters_total", &[("reason", "malformed")]);
        let rejected = setup.metric("mesh_events_dead_letters_total", &[("reason", "rejected")]);
        (malformed == 1.0 && rejected == 1.0).then_some(())
    });
    let dead = setup
        .redis
        .cli(&["XLEN", "mesh.events.orders.dead.shipping"]);
    assert_eq!(dead.trim(), "2");
    let log = setup.shipping.child.log();
    assert!(log.contains("dead-lettered an event"), "{log}");
    assert!(log.contains("does not decode"), "the reason is logged");
    // The lag drains to zero once everything is settled.
    testkit::wait_until("no consumer lag", Duration::from_secs(20), || {
        (setup.metric("mesh_events_consumer_lag", &[("group", "shipping")]) == 0.0).then_some(())
    });
}

#[test]
fn bad_requests_say_which_field_and_unknown_shipments_are_not_found() {
    let setup = Setup::start();
    setup
        .call("ListShipments", r#"{"order_id":"o","user_id":"u"}"#)
        .assert_status("InvalidArgument", &["exactly one of order_id and user_id"]);
    setup
        .call(
            "ListShipments",
            r#"{"user_id":"u","page_size":5000,"page_token":"nope"}"#,
        )
        .assert_status(
            "InvalidArgument",
            &["page_size: must be between 1 and 1000", "page_token"],
        );
    setup
        .call("GetShipment", r#"{"shipment_id":""}"#)
        .assert_status("InvalidArgument", &["shipment_id: must not be empty"]);
    setup
        .call("GetShipment", r#"{"shipment_id":"shp_nope"}"#)
        .assert_status("NotFound", &["shipment shp_nope not found"]);
    // Without mTLS nobody is the operator.
    setup
        .call(
            "MarkShipped",
            r#"{"shipment_id":"shp_nope","tracking_number":"1Z"}"#,
        )
        .assert_status("PermissionDenied", &["operator", "--mtls=off"]);
}

#[test]
fn only_the_operator_may_mark_a_shipment_shipped() {
    let agent = ConsulAgent::start();
    let setup = Setup::start_with(ServiceOptions {
        consul: Some(agent.http_addr()),
        mtls: true,
        ..ServiceOptions::default()
    });
    setup.publish(confirmed("ord_d", "u_1"));
    let operator = agent.cert_files("operator");
    let orders = agent.cert_files("orders");
    let addr = setup.shipping.addr();
    let call = |certs: &testkit::CertFiles, method: &str, body: &str| {
        testkit::grpcurl_mtls(certs, &["-d", body, &addr, &format!("{SERVICE}/{method}")])
    };
    let shipment = testkit::wait_until("the shipment", Duration::from_secs(30), || {
        let out = call(&operator, "ListShipments", r#"{"order_id":"ord_d"}"#);
        out.json()["shipments"].as_array()?.first().cloned()
    });
    let id = shipment["shipmentId"].as_str().unwrap();
    let body = format!(r#"{{"shipment_id":"{id}","tracking_number":"1Z999AA1"}}"#);
    call(&orders, "MarkShipped", &body)
        .assert_status("PermissionDenied", &["orders may not call it"]);
    let shipped = call(&operator, "MarkShipped", &body);
    assert!(shipped.success, "{shipped:?}");
    assert_eq!(shipped.json()["status"], "SHIPMENT_STATUS_SHIPPED");
    assert_eq!(shipped.json()["trackingNumber"], "1Z999AA1");
    // Cancelled after it left: a return is asked for.
    setup.publish(cancelled("ord_d"));
    testkit::wait_until("the return request", Duration::from_secs(30), || {
        let out = call(
            &operator,
            "GetShipment",
            &format!(r#"{{"shipment_id":"{id}"}}"#),
        );
        (out.json()["status"] == "SHIPMENT_STATUS_RETURN_REQUESTED").then_some(())
    });
}

#[test]
fn drains_on_sigterm() {
    let redis = RedisServer::start();
    let metrics = format!("127.0.0.1:{}", testkit::free_port());
    testkit::conformance::assert_drains_on_sigterm(
        "shipping",
        SERVICE,
        with_broker(&redis, &metrics, ServiceOptions::default()),
    );
}
