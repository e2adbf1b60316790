//! REST/JSON through the gateway, as curl sends it.

use serde_json::json;

use crate::common::{curl, curl_as, Shop};

/// Sign-up (public), a catalogue read (public), then with a token: place an
/// order, read it, list it through both bindings, read the own account,
/// cancel it with the `:cancel` verb.
pub fn curl_signs_up_reads_orders_lists_and_cancels(shop: &Shop) {
    let alice = shop.sign_up("alice");
    let token = shop.token(&alice);

    let item = curl(&[&shop.url("/v1/items/WIDGET-1")]);
    assert_eq!(item.status, 200, "{item:?}");
    assert_eq!(item.header("content-type"), Some("application/json"));
    let item = item.json();
    assert_eq!(item["sku"], "WIDGET-1");
    assert_eq!(item["unitPriceCents"], "1999", "int64 is a JSON string");
    assert_eq!(item["currency"], "EUR");

    // proto3 JSON: lowerCamelCase or proto names, numbers or strings for int64.
    let body = json!({
        "requestId": "front-door-1",
        "user_id": alice,
        "items": [{"sku": "WIDGET-1", "quantity": 2}, {"sku": "GADGET-2", "quantity": "1"}],
    });
    let placed = curl_as(
        &token,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
            &shop.url("/v1/orders"),
        ],
    );
    assert_eq!(placed.status, 200, "{placed:?}");
    let order = placed.json();
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    assert_eq!(order["totalCents"], "8997");
    assert_eq!(order["userId"], alice.as_str());
    let order_id = order["orderId"].as_str().expect("orderId").to_owned();

    let got = curl_as(&token, &[&shop.url(&format!("/v1/orders/{order_id}"))]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.json()["orderId"], order_id.as_str());

    for path in [
        format!("/v1/users/{alice}/orders?pageSize=10"),
        format!("/v1/orders?userId={alice}&page_size=10"),
    ] {
        let listed = curl_as(&token, &[&shop.url(&path)]);
        assert_eq!(listed.status, 200, "{path}: {listed:?}");
        let orders = listed.json()["orders"].clone();
        assert!(
            orders
                .as_array()
                .expect("orders")
                .iter()
                .any(|order| order["orderId"] == order_id.as_str()),
            "{path}: {orders}"
        );
    }

    let account = curl_as(&token, &[&shop.url(&format!("/v1/users/{alice}"))]);
    assert_eq!(account.status, 200, "{account:?}");
    assert_eq!(account.json()["email"], "alice@example.com");

    let cancelled = curl_as(
        &token,
        &[
            "-X",
            "POST",
            &shop.url(&format!("/v1/orders/{order_id}:cancel")),
        ],
    );
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    let status = cancelled.json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        status == "ORDER_STATUS_CANCELLED" || status == "ORDER_STATUS_CANCELLING",
        "{cancelled:?}"
    );
}
