//! Errors the HTTP way: every refusal a status a client understands and a
//! `google.rpc.Status` body, never a 500 for bad input.

use serde_json::json;

use crate::common::{curl, curl_as, Reply, Shop};

fn post_json(shop: &Shop, path: &str, body: &str) -> Reply {
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        &shop.url(path),
    ])
}

fn assert_error(reply: &Reply, status: u16, code: i64, says: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    let body = reply.json();
    assert_eq!(body["code"], code, "{reply:?}");
    assert!(
        body["message"].as_str().unwrap_or_default().contains(says),
        "{says:?} not in {reply:?}"
    );
    assert!(body["details"].is_array(), "{reply:?}");
}

pub fn errors_are_http_statuses_with_google_rpc_status_bodies(shop: &Shop) {
    // The gateway's own refusals.
    assert_error(
        &post_json(shop, "/v1/users", r#"{"email":"#),
        400,
        3,
        "not valid JSON",
    );
    assert_error(
        &post_json(
            shop,
            "/v1/users",
            r#"{"email":"a@b.c","displayName":"A","admin":true}"#,
        ),
        400,
        3,
        "admin",
    );
    assert_error(
        &post_json(shop, "/v1/users", r#"{"email":5}"#),
        400,
        3,
        "invalid request",
    );
    assert_error(&post_json(shop, "/v1/users", "[]"), 400, 3, "JSON object");
    assert_error(
        &curl(&[&shop.url("/v2/nothing")]),
        404,
        5,
        "no API route for GET /v2/nothing",
    );
    let wrong_verb = curl(&["-X", "DELETE", &shop.url("/v1/items/WIDGET-1")]);
    assert_error(&wrong_verb, 405, 12, "allowed: GET");
    assert_eq!(wrong_verb.header("allow"), Some("GET"));
    assert_error(
        &curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: text/plain",
            "-d",
            "hello",
            &shop.url("/v1/users"),
        ]),
        415,
        3,
        "Content-Type: application/json",
    );
    // Text built from input is bounded.
    let long_key = format!(r#"{{"{}":1}}"#, "k".repeat(20_000));
    let bounded = post_json(shop, "/v1/users", &long_key);
    assert_eq!(bounded.status, 400);
    assert!(bounded.body.len() < 2_000, "{} bytes", bounded.body.len());

    // The services' statuses, mapped.
    let invalid = post_json(shop, "/v1/users", r#"{"email":"nope","displayName":""}"#);
    assert_error(&invalid, 400, 3, "invalid CreateUserRequest");
    let details = &invalid.json()["details"][0];
    assert_eq!(
        details["@type"], "type.googleapis.com/google.rpc.BadRequest",
        "{invalid:?}"
    );
    let fields: Vec<&str> = details["fieldViolations"]
        .as_array()
        .expect("fieldViolations")
        .iter()
        .filter_map(|violation| violation["field"].as_str())
        .collect();
    assert_eq!(fields, ["email", "display_name"], "{invalid:?}");

    assert_error(
        &curl(&[&shop.url("/v1/items/NO-SUCH-SKU")]),
        404,
        5,
        "NO-SUCH-SKU",
    );
    let carol = shop.sign_up("carol-errors");
    let again = post_json(
        shop,
        "/v1/users",
        &json!({"email": "carol-errors@example.com", "displayName": "Carol"}).to_string(),
    );
    assert_error(&again, 409, 6, "");
    let too_many = json!({"requestId": "errors-1", "userId": carol, "items": [{"sku": "GADGET-2", "quantity": 500}]});
    let rejected = curl_as(
        &shop.token(&carol),
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &too_many.to_string(),
            &shop.url("/v1/orders"),
        ],
    );
    assert_error(&rejected, 400, 9, "insufficient stock");
}
