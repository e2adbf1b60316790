//! The front door as outside tools see it, against one real mesh:
//!
//! - schemathesis (PyPI) generates requests from `GET /openapi.json` —
//!   bounded examples, authenticated with a valid token, seeded users,
//!   items, orders and the seeded order's shipment offered as likely
//!   values — and finds no 5xx and no
//!   response outside the document; the gateway's own metrics show that
//!   every operation answered at least one 2xx;
//! - the shop page at `GET /` in headless Chromium: an order placed with a
//!   click appears CONFIRMED.

mod common;

use std::{collections::BTreeMap, process::Command, time::Duration};

use common::{curl, curl_as, Shop, ShopOptions};
use serde_json::json;

/// 2xx answers per (method, route) in the gateway's metrics.
fn successes(shop: &Shop) -> BTreeMap<(String, String), f64> {
    let text = curl(&[&format!("http://{}/metrics", shop.metrics)]).body;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("http_server_request_duration_seconds_count{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                .map(|value| value.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        if label("http_response_status_code").starts_with('2') {
            *counts
                .entry((label("http_request_method"), label("http_route")))
                .or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    counts
}

/// Every (method, route template) of the OpenAPI document.
fn operations(document: &serde_json::Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            operations.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    operations
}

#[test]
fn schemathesis_and_a_browser_find_the_front_door_conforming() {
    // Rate limits off for the run: schemathesis sends its requests as fast
    // as the gateway answers them.
    let shop = Shop::start(ShopOptions {
        env: Vec::new(),
        gateway_args: ["--rate-limit", "0", "--anonymous-rate-limit", "0"]
            .iter()
            .map(|arg| (*arg).to_owned())
            .collect(),
    });
    shop.stock("WIDGET-1", 100_000, 1999);
    shop.stock("GADGET-2", 100_000, 4999);
    schemathesis_finds_no_5xx_and_no_schema_violation(&shop);
    the_shop_page_shows_a_confirmed_order_in_chromium(&shop);
}

fn schemathesis_finds_no_5xx_and_no_schema_violation(shop: &Shop) {
    let user = shop.sign_up("schemathesis");
    let token = shop.token(&user);
    let seeded = json!({"requestId": "conformance-seed", "userId": user, "items": [{"sku": "WIDGET-1", "quantity": 1}]});
    let placed = curl_as(
        &token,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &seeded.to_string(),
            &shop.url("/v1/orders"),
        ],
    );
    assert_eq!(placed.status, 200, "{placed:?}");
    let order = placed.json()["orderId"]
        .as_str()
        .expect("orderId")
        .to_owned();
    // Its shipment, once the event went through the broker to shipping.
    let shipment = testkit::wait_until(
        &format!("the shipment of {order}"),
        Duration::from_secs(60),
        || {
            let reply = curl_as(
                &token,
                &[&shop.url(&format!("/v1/orders/{order}/shipments"))],
            );
            assert_eq!(reply.status, 200, "{reply:?}");
            reply.json()["shipments"][0]["shipmentId"]
                .as_str()
                .map(str::to_owned)
        },
    );

    // The seeded values, offered for the fields that name them (the rest
    // of each request, and these too at times, is generated).
    let config = shop.dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[dictionaries]
users = {{ values = ["{user}"] }}
orders = {{ values = ["{order}"] }}
shipments = {{ values = ["{shipment}"] }}
skus = {{ values = ["WIDGET-1", "GADGET-2"] }}
quantities = {{ values = ["1", "2"] }}
currencies = {{ values = ["EUR"] }}
emails = {{ values = ["conformance-1@example.com", "conformance-2@example.com"] }}
names = {{ values = ["Ada Lovelace", "Grace"] }}

[parameters]
"path.user_id" = {{ dictionary = "users", probability = 0.8 }}
"query.userId" = {{ dictionary = "users", probability = 0.8 }}
"path.order_id" = {{ dictionary = "orders", probability = 0.8 }}
"path.shipment_id" = {{ dictionary = "shipments", probability = 0.8 }}
"path.sku" = {{ dictionary = "skus", probability = 0.8 }}
"body.userId" = {{ dictionary = "users", probability = 0.8 }}
"body.items[*].sku" = {{ dictionary = "skus", probability = 0.8 }}
"body.items[*].quantity" = {{ dictionary = "quantities", probability = 0.8 }}
"body.currency" = {{ dictionary = "currencies", probability = 0.5 }}
"body.email" = {{ dictionary = "emails", probability = 0.6 }}
"body.displayName" = {{ dictionary = "names", probability = 0.6 }}

# An order is valid only for the token's own user and known, stocked SKUs:
# those are fixed for PlaceOrder, its other fields are generated.
[[operations]]
include-name = "POST /v1/orders"
parameters = {{ "body.userId" = "{user}", "body.currency" = "EUR", "body.items" = [{{ sku = "WIDGET-1", quantity = "1" }}] }}
"#
        ),
    )
    .expect("write the schemathesis configuration");
    let before = successes(shop);
    let mut command = Command::new(testkit::tool("schemathesis"));
    command
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &shop.url("/openapi.json"),
            "-H",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "30",
            "--seed",
            "20",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .current_dir(shop.dir.path());
    // Bounded by the example count; the timeout only guards against a hang.
    let output = testkit::output_within(command, Duration::from_secs(300));
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(report.contains("11 selected / 11 total"), "{report}");

    let after = successes(shop);
    let document = curl(&[&shop.url("/openapi.json")]).json();
    let mut without_2xx = Vec::new();
    for (method, path) in operations(&document) {
        // The route label is the template as written in the proto.
        let route = path.clone();
        let gained = after
            .get(&(method.clone(), route.clone()))
            .copied()
            .unwrap_or(0.0)
            - before.get(&(method.clone(), route)).copied().unwrap_or(0.0);
        if gained < 1.0 {
            without_2xx.push(format!("{method} {path}"));
        }
    }
    assert!(
        without_2xx.is_empty(),
        "operations schemathesis never got a 2xx from: {without_2xx:?}\n{after:#?}\n{report}"
    );
}

fn the_shop_page_shows_a_confirmed_order_in_chromium(shop: &Shop) {
    let user = shop.sign_up("shopper");
    let token = shop
        .keys
        .mint(&user, Duration::from_secs(3600))
        .expect("mint");
    let page = shop.url(&format!("/#token={token}&skus=WIDGET-1,GADGET-2"));
    let profile = tempfile::tempdir().expect("a fresh Chromium profile");
    let screenshot = shop.dir.path().join("shop.png");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/shop.cjs");
    let node_modules = testkit::tools_dir().join("node/node_modules");
    assert!(
        node_modules.join("playwright-core").is_dir(),
        "{} lacks playwright-core: run scripts/install-tools",
        node_modules.display()
    );
    let output = Command::new("node")
        .env("NODE_PATH", &node_modules)
        .arg(&script)
        .arg(testkit::tool("chromium"))
        .arg(&page)
        .arg(profile.path())
        .arg(&screenshot)
        .output()
        .expect("run node (is it installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|error| panic!("{error}: {stdout}"));
    assert_eq!(seen["errors"], json!([]), "{seen}");
    let items = seen["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{seen}");
    assert_eq!(items[0][0], "WIDGET-1", "{seen}");
    assert_eq!(items[0][1], "19.99 EUR", "{seen}");
    let orders = seen["orders"].as_array().expect("orders");
    assert_eq!(orders.len(), 1, "{seen}");
    assert_eq!(orders[0]["status"], "ORDER_STATUS_CONFIRMED", "{seen}");
    assert!(
        seen["message"]
            .as_str()
            .unwrap_or_default()
            .ends_with("CONFIRMED"),
        "{seen}"
    );
    assert!(std::fs::metadata(&screenshot)
        .map(|m| m.len() > 10_000)
        .unwrap_or(false));
    if let Some(out) = std::env::var_os("MESH_SHOP_SCREENSHOT") {
        std::fs::copy(&screenshot, out).expect("copy the screenshot");
    }
}
