//! Only annotated methods are exposed, on every protocol the gateway
//! speaks; and behind the gateway's own allow-list, an intention denies it
//! payments.

use prost::Message as _;
use testkit::grpcurl_mtls;

use crate::common::{curl, grpcurl_gateway, Shop};

/// The internal RPCs, with the `.proto` grpcurl reads them from.
const INTERNAL: &[(&str, &str)] = &[
    (
        "mesh/payments/v1/payments.proto",
        "mesh.payments.v1.Payments/Charge",
    ),
    (
        "mesh/payments/v1/payments.proto",
        "mesh.payments.v1.Payments/Refund",
    ),
    (
        "mesh/payments/v1/payments.proto",
        "mesh.payments.v1.Payments/GetPayment",
    ),
    (
        "mesh/inventory/v1/inventory.proto",
        "mesh.inventory.v1.Inventory/Reserve",
    ),
    (
        "mesh/inventory/v1/inventory.proto",
        "mesh.inventory.v1.Inventory/Commit",
    ),
    (
        "mesh/inventory/v1/inventory.proto",
        "mesh.inventory.v1.Inventory/Release",
    ),
    (
        "mesh/inventory/v1/inventory.proto",
        "mesh.inventory.v1.Inventory/Restock",
    ),
    (
        "mesh/inventory/v1/inventory.proto",
        "mesh.inventory.v1.Inventory/AddStock",
    ),
    ("mesh/users/v1/users.proto", "mesh.users.v1.Users/ListUsers"),
    (
        "mesh/shipping/v1/shipping.proto",
        "mesh.shipping.v1.Shipping/MarkShipped",
    ),
];

/// A gRPC-Web request body: one uncompressed message frame.
fn grpc_web_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

fn grpc_web(shop: &Shop, method: &str, message: &[u8]) -> crate::common::Reply {
    let file = shop.dir.path().join("grpc-web-request.bin");
    std::fs::write(&file, grpc_web_frame(message)).expect("write the request");
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/grpc-web+proto",
        "-H",
        "X-Grpc-Web: 1",
        "--data-binary",
        &format!("@{}", file.display()),
        &shop.url(&format!("/{method}")),
    ])
}

/// Payments, Reserve, Commit, Restock, AddStock, ListUsers…: 404 over
/// REST, UNIMPLEMENTED from HTTP 404 over gRPC and gRPC-Web; an exposed
/// method works over all three.
pub fn internal_rpcs_answer_404_on_rest_grpc_and_grpc_web(shop: &Shop) {
    for (proto, method) in INTERNAL {
        let rest = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{}",
            &shop.url(&format!("/{method}")),
        ]);
        assert_eq!(rest.status, 404, "REST {method}: {rest:?}");
        assert_eq!(rest.grpc_code(), 5, "NOT_FOUND");

        grpcurl_gateway(&shop.gateway, proto, &["-d", "{}"], method)
            .assert_status("Unimplemented", &["404"]);

        let web = grpc_web(shop, method, &[]);
        assert_eq!(web.status, 404, "gRPC-Web {method}: {web:?}");
        assert_eq!(web.header("grpc-status"), Some("12"), "{web:?}");
        assert!(
            web.header("grpc-message")
                .unwrap_or_default()
                .contains("not%20exposed"),
            "{web:?}"
        );
    }
    for path in ["/v1/payments/pay_1", "/v1/items", "/v1/users"] {
        let rest = curl(&[&shop.url(path)]);
        assert!(matches!(rest.status, 404 | 405), "GET {path}: {rest:?}");
    }

    // The exposed GetItem, on each protocol.
    let grpc = grpcurl_gateway(
        &shop.gateway,
        "mesh/inventory/v1/inventory.proto",
        &["-d", r#"{"sku":"WIDGET-1"}"#],
        "mesh.inventory.v1.Inventory/GetItem",
    );
    assert!(grpc.success, "{grpc:?}");
    assert_eq!(grpc.json()["sku"], "WIDGET-1");
    let request = mesh::proto::inventory::v1::GetItemRequest {
        sku: "WIDGET-1".into(),
    }
    .encode_to_vec();
    let web = grpc_web(shop, "mesh.inventory.v1.Inventory/GetItem", &request);
    assert_eq!(web.status, 200, "{web:?}");
    assert_eq!(
        web.header("content-type"),
        Some("application/grpc-web+proto")
    );
    // A message frame (flag 0), then the trailer frame (flag 0x80) with grpc-status 0.
    assert_eq!(web.raw[0], 0, "{web:?}");
    let length = u32::from_be_bytes(web.raw[1..5].try_into().unwrap()) as usize;
    let item = mesh::proto::inventory::v1::Item::decode(&web.raw[5..5 + length]).expect("an Item");
    assert_eq!(item.sku, "WIDGET-1");
    assert_eq!(web.raw[5 + length], 0x80, "{web:?}");
    assert!(
        String::from_utf8_lossy(&web.raw[5 + length + 5..]).contains("grpc-status:0"),
        "{web:?}"
    );

    // gRPC of a method that needs a token: refused without one, served with one.
    let alice = shop.sign_up("alice-grpc");
    let list = format!(r#"{{"user_id":"{alice}"}}"#);
    grpcurl_gateway(
        &shop.gateway,
        "mesh/orders/v1/orders.proto",
        &["-d", &list],
        "mesh.orders.v1.Orders/ListOrders",
    )
    .assert_status("Unauthenticated", &["bearer token"]);
    let bearer = format!("authorization: Bearer {}", shop.token(&alice));
    let listed = grpcurl_gateway(
        &shop.gateway,
        "mesh/orders/v1/orders.proto",
        &["-H", &bearer, "-d", &list],
        "mesh.orders.v1.Orders/ListOrders",
    );
    assert!(listed.success, "{listed:?}");
    let someone_else = r#"{"user_id":"u_someone_else"}"#;
    grpcurl_gateway(
        &shop.gateway,
        "mesh/orders/v1/orders.proto",
        &["-H", &bearer, "-d", someone_else],
        "mesh.orders.v1.Orders/ListOrders",
    )
    .assert_status("PermissionDenied", &["caller's own id"]);
}

/// With its own Connect identity, the gateway cannot call payments at all:
/// the shipped intention denies it.
pub fn an_intention_denies_the_gateway_payments(shop: &Shop) {
    let payments = shop.service("payments").addr();
    let protos = crate::common::proto_dir().display().to_string();
    grpcurl_mtls(
        &shop.agent.cert_files("gateway"),
        &[
            "-import-path",
            &protos,
            "-proto",
            "mesh/payments/v1/payments.proto",
            "-d",
            r#"{"payment_id":"pay_1"}"#,
            &payments,
            "mesh.payments.v1.Payments/GetPayment",
        ],
    )
    .assert_status("PermissionDenied", &["gateway may not call payments"]);
}
