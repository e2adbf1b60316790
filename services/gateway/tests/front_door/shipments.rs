//! Shipping's read RPCs through the gateway, exposed by their
//! `google.api.http` annotations alone: an order placed over REST becomes a
//! shipment (orders' outbox → Redis → shipping's consumer), which its owner
//! reads over REST/JSON; another user is refused the way orders refuses an
//! order of someone else (403), a caller without a token gets 401.

use std::time::Duration;

use serde_json::json;

use crate::common::{curl, curl_as, place_order, Reply, Shop};

/// Places an order for `user` over REST; its id.
fn place(shop: &Shop, token: &str, user: &str) -> String {
    let placed = place_order(shop, token, user, "shipments-1", 2);
    assert_eq!(placed.status, 200, "{placed:?}");
    assert_eq!(
        placed.json()["status"],
        "ORDER_STATUS_CONFIRMED",
        "{placed:?}"
    );
    placed.json()["orderId"]
        .as_str()
        .expect("orderId")
        .to_owned()
}

/// Refused as orders refuses the same caller: `status` and `grpc_code`.
fn assert_refused(reply: &Reply, status: u16, grpc_code: i64, what: &str) {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
    assert_eq!(reply.grpc_code(), grpc_code, "{what}: {reply:?}");
}

pub fn a_shipment_is_read_by_its_owner_only(shop: &Shop) {
    let alice = shop.sign_up("alice-ships");
    let bob = shop.sign_up("bob-ships");
    let (alice_token, bob_token) = (shop.token(&alice), shop.token(&bob));
    let order = place(shop, &alice_token, &alice);

    // The event reaches shipping asynchronously: its owner polls the
    // order's shipments (bounded) until the shipment exists.
    let by_order = shop.url(&format!("/v1/orders/{order}/shipments"));
    let shipment = testkit::wait_until(
        &format!("the shipment of {order} through the gateway"),
        Duration::from_secs(60),
        || {
            let reply = curl_as(&alice_token, &[&by_order]);
            assert_eq!(reply.status, 200, "{reply:?}");
            reply.json()["shipments"]
                .as_array()
                .and_then(|shipments| shipments.first().cloned())
        },
    );
    assert_eq!(shipment["orderId"], order, "{shipment}");
    assert_eq!(shipment["userId"], alice, "{shipment}");
    assert_eq!(shipment["status"], "SHIPMENT_STATUS_PENDING", "{shipment}");
    assert_eq!(
        shipment["lines"],
        json!([{"sku": "WIDGET-1", "quantity": "2"}]),
        "proto3 JSON: int64 as a string; {shipment}"
    );
    let shipment_id = shipment["shipmentId"].as_str().expect("shipmentId");
    let one = shop.url(&format!("/v1/shipments/{shipment_id}"));
    let mine = shop.url(&format!("/v1/users/{alice}/shipments"));

    let got = curl_as(&alice_token, &[&one]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.json(), shipment);
    let listed = curl_as(&alice_token, &[&format!("{mine}?pageSize=10")]);
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.json()["shipments"], json!([shipment]), "{listed:?}");

    // Another user: 403 on each, as for alice's order itself.
    let order_of_alice = curl_as(&bob_token, &[&shop.url(&format!("/v1/orders/{order}"))]);
    assert_refused(&order_of_alice, 403, 7, "bob reads alice's order");
    for url in [&one, &by_order, &mine] {
        let reply = curl_as(&bob_token, &[url]);
        assert_refused(&reply, 403, 7, &format!("bob reads {url}"));
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap_or_default()
                .contains("belongs to another user"),
            "{reply:?}"
        );
    }
    // Bob's own (empty) list is his to read.
    let own = curl_as(
        &bob_token,
        &[&shop.url(&format!("/v1/users/{bob}/shipments"))],
    );
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(own.json()["shipments"], json!([]), "{own:?}");

    // No token: 401 with the bearer challenge, before any call.
    for url in [&one, &by_order, &mine] {
        let reply = curl(&[url]);
        assert_refused(&reply, 401, 16, &format!("anonymous {url}"));
        assert!(
            reply
                .header("www-authenticate")
                .unwrap_or_default()
                .starts_with("Bearer"),
            "{reply:?}"
        );
    }
}
