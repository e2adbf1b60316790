//! The real `orders` binary driven by the real grpcurl: what an operator
//! sees on the wire.

mod common;

use std::time::Duration;

use common::{start_orders, start_orders_with, Upstreams};
use testkit::{ServiceOptions, ServiceProcess};

const SERVICE: &str = "mesh.orders.v1.Orders";

/// orders alone: its upstream channels are lazy, so it serves without them.
fn orders_alone(options: ServiceOptions) -> ServiceProcess {
    ServiceProcess::start("orders", options)
}

#[test]
fn list_shows_orders_health_and_reflection() {
    testkit::conformance::assert_lists_service_health_and_reflection(
        &orders_alone(ServiceOptions::default()),
        SERVICE,
    );
}

#[test]
fn describe_shows_the_rpcs() {
    testkit::conformance::assert_describes(
        &orders_alone(ServiceOptions::default()),
        SERVICE,
        &[
            "rpc PlaceOrder",
            "rpc GetOrder",
            "rpc ListOrders",
            "rpc CancelOrder",
        ],
    );
}

#[test]
fn invalid_requests_name_each_bad_field() {
    let p = orders_alone(ServiceOptions::default());
    let out = p.grpcurl_call(
        SERVICE,
        "PlaceOrder",
        r#"{"request_id":"","user_id":"u_1","items":[{"sku":"A","quantity":0},{"sku":"A","quantity":1}],"currency":"EURO"}"#,
    );
    out.assert_status(
        "InvalidArgument",
        &[
            "request_id: must not be empty",
            "items[0].quantity: must be greater than 0 (got 0)",
            "items[1].sku: A appears more than once",
            "currency: must be a 3-letter ISO 4217 code",
        ],
    );

    let out = p.grpcurl_call(
        SERVICE,
        "PlaceOrder",
        r#"{"request_id":"r","user_id":"u_1"}"#,
    );
    out.assert_status(
        "InvalidArgument",
        &["items: must contain at least one line"],
    );

    let out = p.grpcurl_call(
        SERVICE,
        "ListOrders",
        r#"{"user_id":"u_1","page_size":500,"page_token":"nonsense"}"#,
    );
    out.assert_status(
        "InvalidArgument",
        &[
            "page_size: must be between 1 and 100",
            "page_token: is not a token this service issued",
        ],
    );
}

#[test]
fn unknown_orders_are_not_found() {
    let p = orders_alone(ServiceOptions::default());
    for method in ["GetOrder", "CancelOrder"] {
        let out = p.grpcurl_call(SERVICE, method, r#"{"order_id":"ord_missing"}"#);
        out.assert_status("NotFound", &["order ord_missing not found"]);
    }
}

#[test]
fn place_then_get_and_list_round_trip() {
    let shop = Upstreams::start(&[]);
    let orders = start_orders(&shop, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let user = runtime.block_on(shop.user("alan"));
    runtime.block_on(shop.stock_in("PEN-1", 20, 120, "USD"));

    let mut placed = Vec::new();
    for request in ["r-a", "r-b", "r-c"] {
        let out = orders.grpcurl_call(
            SERVICE,
            "PlaceOrder",
            &format!(
                r#"{{"request_id":"{request}","user_id":"{user}","items":[{{"sku":"PEN-1","quantity":2}}],"currency":"usd"}}"#
            ),
        );
        assert!(out.success, "{out:?}");
        let order = out.json();
        assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED");
        assert_eq!(order["currency"], "USD");
        assert_eq!(order["totalCents"], "240");
        assert_eq!(order["items"][0]["unitPriceCents"], "120");
        placed.push(order);
        // Distinct creation times make the expected order unambiguous.
        std::thread::sleep(Duration::from_millis(5));
    }

    let id = placed[0]["orderId"].as_str().unwrap();
    let got = orders.grpcurl_call(SERVICE, "GetOrder", &format!(r#"{{"order_id":"{id}"}}"#));
    assert!(got.success, "{got:?}");
    assert_eq!(got.json(), placed[0]);

    let first = orders
        .grpcurl_call(
            SERVICE,
            "ListOrders",
            &format!(r#"{{"user_id":"{user}","page_size":2}}"#),
        )
        .json();
    let ids: Vec<&str> = first["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["orderId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            placed[2]["orderId"].as_str().unwrap(),
            placed[1]["orderId"].as_str().unwrap()
        ],
        "newest first"
    );
    let token = first["nextPageToken"].as_str().expect("a next page");
    let second = orders
        .grpcurl_call(
            SERVICE,
            "ListOrders",
            &format!(r#"{{"user_id":"{user}","page_size":2,"page_token":"{token}"}}"#),
        )
        .json();
    assert_eq!(second["orders"].as_array().unwrap().len(), 1);
    assert_eq!(second["orders"][0]["orderId"], placed[0]["orderId"]);
    assert!(second.get("nextPageToken").is_none(), "last page: {second}");
}

#[test]
fn health_turns_not_serving_on_sigterm_then_the_process_exits_0() {
    testkit::conformance::assert_drains_on_sigterm("orders", SERVICE, ServiceOptions::default());
}

#[test]
fn orders_survive_a_restart_and_replays_still_return_them() {
    let shop = Upstreams::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let options = || ServiceOptions {
        data_dir: Some(dir.path().to_owned()),
        ..ServiceOptions::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let user = runtime.block_on(shop.user("hedy"));
    runtime.block_on(shop.stock("RADIO-1", 3, 700));
    let body = format!(
        r#"{{"request_id":"keep","user_id":"{user}","items":[{{"sku":"RADIO-1","quantity":1}}]}}"#
    );

    let first = start_orders_with(&shop, &[], options());
    let placed = first.grpcurl_call(SERVICE, "PlaceOrder", &body);
    assert!(placed.success, "{placed:?}");
    let placed = placed.json();
    drop(first);

    let second = start_orders_with(&shop, &[], options());
    let id = placed["orderId"].as_str().unwrap();
    let got = second.grpcurl_call(SERVICE, "GetOrder", &format!(r#"{{"order_id":"{id}"}}"#));
    assert!(got.success, "{got:?}");
    assert_eq!(got.json(), placed);
    let replay = second.grpcurl_call(SERVICE, "PlaceOrder", &body);
    assert_eq!(replay.json(), placed);
    assert_eq!(runtime.block_on(shop.item("RADIO-1")).available, 2);
}
