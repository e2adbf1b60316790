//! Edge authentication and ownership: who may do what through the gateway,
//! and where each refusal comes from.

use serde_json::json;
use testkit::grpcurl_mtls;

use crate::common::{curl, curl_as, place_order, Shop};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Places an order for `user` with `token`; its id.
fn order_for(shop: &Shop, token: &str, user: &str, request_id: &str) -> String {
    let placed = place_order(shop, token, user, request_id, 1);
    assert_eq!(placed.status, 200, "{placed:?}");
    placed.json()["orderId"]
        .as_str()
        .expect("orderId")
        .to_owned()
}

/// No token: 401 with the bearer challenge; a bad, expired or foreign token:
/// 401; a valid token of another user: 403 on every order operation and on
/// the account — from the gateway's rule where the request names the user,
/// from orders itself where only the stored order knows its owner.
pub fn without_a_token_401_with_another_users_token_403(shop: &Shop) {
    let alice = shop.sign_up("alice-auth");
    let bob = shop.sign_up("bob-auth");
    let (alice_token, bob_token) = (shop.token(&alice), shop.token(&bob));
    let order = order_for(shop, &alice_token, &alice, "auth-1");
    let json = ["-H", "Content-Type: application/json"];
    let place_for_alice = json!({"requestId": "auth-2", "userId": alice, "items": [{"sku": "WIDGET-1", "quantity": 1}]}).to_string();

    let anonymous = curl(&[
        "-X",
        "POST",
        json[0],
        json[1],
        "-d",
        &place_for_alice,
        &shop.url("/v1/orders"),
    ]);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(anonymous.grpc_code(), 16, "UNAUTHENTICATED");
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"mesh\"")
    );
    assert_eq!(
        curl(&[&shop.url(&format!("/v1/orders/{order}"))]).status,
        401
    );

    let expired = shop
        .token_with(json!({"iss": "mesh-dev", "aud": "mesh", "sub": alice, "exp": now() - 3600}));
    let wrong_audience = shop.token_with(
        json!({"iss": "mesh-dev", "aud": "elsewhere", "sub": alice, "exp": now() + 600}),
    );
    for (token, says) in [
        ("not.a.token", "not a JWT"),
        (expired.as_str(), "expired"),
        (wrong_audience.as_str(), "audience"),
    ] {
        let refused = curl_as(token, &[&shop.url(&format!("/v1/orders/{order}"))]);
        assert_eq!(refused.status, 401, "{says}: {refused:?}");
        assert!(
            refused.json()["message"].as_str().unwrap().contains(says),
            "{refused:?}"
        );
        assert!(refused
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token"));
        assert!(!refused.body.contains(token), "the token is never echoed");
    }

    // Bob, signed in, on Alice's things.
    let forbidden = [
        (
            "POST",
            "/v1/orders".to_owned(),
            Some(place_for_alice.clone()),
            "userId must be the caller's own id",
        ),
        (
            "GET",
            format!("/v1/orders/{order}"),
            None,
            "belongs to another user",
        ),
        (
            "GET",
            format!("/v1/users/{alice}/orders"),
            None,
            "userId must be the caller's own id",
        ),
        (
            "GET",
            format!("/v1/orders?userId={alice}"),
            None,
            "userId must be the caller's own id",
        ),
        (
            "POST",
            format!("/v1/orders/{order}:cancel"),
            None,
            "belongs to another user",
        ),
        (
            "GET",
            format!("/v1/users/{alice}"),
            None,
            "userId must be the caller's own id",
        ),
    ];
    for (method, path, body, says) in forbidden {
        let mut args = vec!["-X", method];
        if let Some(body) = &body {
            args.extend([json[0], json[1], "-d", body.as_str()]);
        }
        let url = shop.url(&path);
        args.push(&url);
        let refused = curl_as(&bob_token, &args);
        assert_eq!(refused.status, 403, "{method} {path}: {refused:?}");
        assert_eq!(refused.grpc_code(), 7, "PERMISSION_DENIED");
        assert!(refused.body.contains(says), "{method} {path}: {refused:?}");
    }
    // The cancel was refused before anything changed.
    let still = curl_as(&alice_token, &[&shop.url(&format!("/v1/orders/{order}"))]);
    assert_eq!(
        still.json()["status"],
        "ORDER_STATUS_CONFIRMED",
        "{still:?}"
    );

    // A client cannot name its subject: the gateway never forwards a
    // client's x-mesh-subject, it sets the one the token proves.
    let forged = curl_as(
        &bob_token,
        &[
            "-H",
            &format!("X-Mesh-Subject: {alice}"),
            &shop.url(&format!("/v1/orders/{order}")),
        ],
    );
    assert_eq!(forged.status, 403, "{forged:?}");
}

/// The subject header counts only on a connection whose Connect identity
/// is `gateway`: orders ignores it from the operator (a service, trusted
/// by its intention) and enforces it from the gateway's identity.
pub fn services_believe_the_subject_only_from_the_gateway_identity(shop: &Shop) {
    let alice = shop.sign_up("alice-subject");
    let bob = shop.sign_up("bob-subject");
    let order = order_for(shop, &shop.token(&alice), &alice, "subject-1");
    let orders = shop.service("orders").addr();
    let request = json!({"order_id": order}).to_string();
    let as_bob = format!("x-mesh-subject: {bob}");
    let call = |identity: &str, header: &str| {
        grpcurl_mtls(
            &shop.agent.cert_files(identity),
            &[
                "-H",
                header,
                "-d",
                &request,
                &orders,
                "mesh.orders.v1.Orders/GetOrder",
            ],
        )
    };

    let from_operator = call("operator", &as_bob);
    assert!(
        from_operator.success,
        "a forged subject from another identity is ignored: {from_operator:?}"
    );
    assert_eq!(from_operator.json()["orderId"], order.as_str());

    call("gateway", &as_bob).assert_status("PermissionDenied", &["belongs to another user"]);
    let as_alice = format!("x-mesh-subject: {alice}");
    assert!(call("gateway", &as_alice).success);
}
