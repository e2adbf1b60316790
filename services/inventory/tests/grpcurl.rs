//! The inventory binary as a person sees it through the real grpcurl: the
//! service list, its description, an AddStock/GetItem round trip, readable
//! errors, health on SIGTERM, and data that survives a restart.

use std::time::Duration;

use testkit::{ServiceOptions, ServiceProcess};

const SERVICE: &str = "mesh.inventory.v1.Inventory";

fn start() -> ServiceProcess {
    ServiceProcess::start("inventory", ServiceOptions::default())
}

#[test]
fn list_shows_the_service_health_and_reflection() {
    testkit::conformance::assert_lists_service_health_and_reflection(&start(), SERVICE);
}

#[test]
fn describe_shows_every_rpc() {
    testkit::conformance::assert_describes(
        &start(),
        SERVICE,
        &[
            "rpc AddStock ( .mesh.inventory.v1.AddStockRequest ) returns ( .mesh.inventory.v1.Item )",
            "rpc GetItem ( .mesh.inventory.v1.GetItemRequest ) returns ( .mesh.inventory.v1.Item )",
            "rpc Reserve ( .mesh.inventory.v1.ReserveRequest ) returns ( .mesh.inventory.v1.Reservation )",
            "rpc Release ( .mesh.inventory.v1.ReleaseRequest ) returns ( .mesh.inventory.v1.Reservation )",
            "rpc Commit ( .mesh.inventory.v1.CommitRequest ) returns ( .mesh.inventory.v1.Reservation )",
        ],
    );
}

#[test]
fn add_stock_then_get_item_round_trips() {
    let inventory = start();
    let added = inventory.grpcurl_call(
        SERVICE,
        "AddStock",
        r#"{"sku":"WIDGET-1","quantity":5,"unit_price_cents":250}"#,
    );
    assert!(added.success, "{added:?}");
    let item = added.json();
    assert_eq!(item["sku"], "WIDGET-1");
    assert_eq!(item["available"], "5", "int64 is a JSON string");
    assert_eq!(item["unitPriceCents"], "250");

    let more = inventory.grpcurl_call(
        SERVICE,
        "AddStock",
        r#"{"sku":"WIDGET-1","quantity":3,"unit_price_cents":300}"#,
    );
    assert!(more.success, "{more:?}");
    let fetched = inventory.grpcurl_call(SERVICE, "GetItem", r#"{"sku":"WIDGET-1"}"#);
    assert!(fetched.success, "{fetched:?}");
    assert_eq!(fetched.json(), more.json());
    assert_eq!(fetched.json()["available"], "8");
    assert_eq!(fetched.json()["unitPriceCents"], "300");
}

#[test]
fn invalid_input_is_invalid_argument_naming_each_field() {
    let inventory = start();
    let output = inventory.grpcurl_call(
        SERVICE,
        "AddStock",
        r#"{"sku":"WIDGET 1","quantity":0,"unit_price_cents":100}"#,
    );
    output.assert_status(
        "InvalidArgument",
        &["Message: invalid AddStockRequest: sku: may only contain letters A-Z or a-z, digits, '.', '_' and '-'; quantity: must be greater than 0"],
    );

    let output = inventory.grpcurl_call(
        SERVICE,
        "Reserve",
        r#"{"reservation_id":"r1","items":[{"sku":"A","quantity":1},{"sku":"A","quantity":2}]}"#,
    );
    output.assert_status(
        "InvalidArgument",
        &["items[1].sku: A appears more than once"],
    );

    let output = inventory.grpcurl_call(SERVICE, "Reserve", r#"{"reservation_id":"r1"}"#);
    output.assert_status("InvalidArgument", &["items: must have at least one line"]);
}

#[test]
fn a_short_reservation_is_failed_precondition_naming_each_sku() {
    let inventory = start();
    assert!(
        inventory
            .grpcurl_call(
                SERVICE,
                "AddStock",
                r#"{"sku":"WIDGET-1","quantity":2,"unit_price_cents":100}"#
            )
            .success
    );
    let output = inventory.grpcurl_call(
        SERVICE,
        "Reserve",
        r#"{"reservation_id":"r1","items":[{"sku":"WIDGET-1","quantity":5},{"sku":"GADGET-9","quantity":1}]}"#,
    );
    output.assert_status(
        "FailedPrecondition",
        &["Message: insufficient stock: WIDGET-1 (asked 5, available 2); GADGET-9 (unknown sku)"],
    );
    let unchanged = inventory
        .grpcurl_call(SERVICE, "GetItem", r#"{"sku":"WIDGET-1"}"#)
        .json();
    assert_eq!(unchanged["available"], "2");

    let output = inventory.grpcurl_call(SERVICE, "GetItem", r#"{"sku":"GADGET-9"}"#);
    output.assert_status("NotFound", &["Message: sku GADGET-9 not found"]);
}

#[test]
fn health_turns_not_serving_on_sigterm_and_the_process_exits_0() {
    testkit::conformance::assert_drains_on_sigterm("inventory", SERVICE, ServiceOptions::default());
}

#[test]
fn data_survives_a_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let options = ServiceOptions {
        data_dir: Some(data_dir.path().to_owned()),
        ..Default::default()
    };
    let mut first = ServiceProcess::start("inventory", options.clone());
    assert!(
        first
            .grpcurl_call(
                SERVICE,
                "AddStock",
                r#"{"sku":"KEEP","quantity":9,"unit_price_cents":10}"#
            )
            .success
    );
    let reserved = first.grpcurl_call(
        SERVICE,
        "Reserve",
        r#"{"reservation_id":"keep-1","items":[{"sku":"KEEP","quantity":4}]}"#,
    );
    assert!(reserved.success, "{reserved:?}");
    first.child.terminate();
    let status = first.child.wait(Duration::from_secs(15)).expect("exits");
    assert!(status.success(), "{status:?}");

    let second = ServiceProcess::start("inventory", options);
    let item = second
        .grpcurl_call(SERVICE, "GetItem", r#"{"sku":"KEEP"}"#)
        .json();
    assert_eq!(
        (item["available"].as_str(), item["reserved"].as_str()),
        (Some("5"), Some("4"))
    );
    // The reservation survived too: a repeat answers it without reserving again.
    let again = second.grpcurl_call(
        SERVICE,
        "Reserve",
        r#"{"reservation_id":"keep-1","items":[{"sku":"KEEP","quantity":4}]}"#,
    );
    assert!(again.success, "{again:?}");
    assert_eq!(again.json(), reserved.json());
    assert_eq!(again.json()["state"], "RESERVATION_STATE_RESERVED");
    assert_eq!(
        second
            .grpcurl_call(SERVICE, "GetItem", r#"{"sku":"KEEP"}"#)
            .json()["available"],
        "5"
    );
}
