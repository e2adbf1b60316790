//! A parked order from an operator's point of view, over Connect mTLS with
//! real processes and the real grpcurl: the saga parks an order whose
//! upstream state contradicts it (once: it is not re-driven every round),
//! the `orders_parked` metric and `mesh status` count it, only the
//! `operator` identity may list, retry or resolve it, and resolving closes it.

use std::{path::Path, process::Command, time::Duration};

use testkit::{
    binary, free_port, grpcurl_mtls, output_within, scrape_metrics, wait_until, CertFiles,
    ConsulAgent, ServiceOptions, ServiceProcess,
};

/// A shop serving Connect mTLS only, registered in `agent`.
struct SecureShop {
    agent: ConsulAgent,
    users: ServiceProcess,
    inventory: ServiceProcess,
    payments: ServiceProcess,
    orders: ServiceProcess,
    orders_metrics: String,
    inventory_dir: tempfile::TempDir,
    payments_dir: tempfile::TempDir,
    operator: CertFiles,
}

fn options(agent: &ConsulAgent, data: Option<&Path>, args: Vec<String>) -> ServiceOptions {
    ServiceOptions {
        consul: Some(agent.http_addr()),
        mtls: true,
        data_dir: data.map(Path::to_owned),
        args: [vec!["--check-interval".to_owned(), "500".to_owned()], args].concat(),
        ..ServiceOptions::default()
    }
}

impl SecureShop {
    fn start() -> Self {
        let agent = ConsulAgent::start();
        let inventory_dir = tempfile::tempdir().expect("temp dir");
        let payments_dir = tempfile::tempdir().expect("temp dir");
        let users = ServiceProcess::start("users", options(&agent, None, vec![]));
        let inventory = ServiceProcess::start(
            "inventory",
            options(&agent, Some(inventory_dir.path()), vec![]),
        );
        let payments = ServiceProcess::start(
            "payments",
            options(&agent, Some(payments_dir.path()), vec![]),
        );
        let orders_metrics = format!("127.0.0.1:{}", free_port());
        let orders = ServiceProcess::start(
            "orders",
            options(
                &agent,
                None,
                [
                    "--metrics-listen",
                    &orders_metrics,
                    "--recovery-interval",
                    "200",
                    "--upstream-timeout",
                    "500",
                    "--users-addr",
                    &users.addr(),
                    "--inventory-addr",
                    &inventory.addr(),
                    "--payments-addr",
                    &payments.addr(),
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
        );
        let operator = agent.cert_files("operator");
        Self {
            agent,
            users,
            inventory,
            payments,
            orders,
            orders_metrics,
            inventory_dir,
            payments_dir,
            operator,
        }
    }

    /// grpcurl as `certs` to `process`'s `method` with `body`.
    fn call(
        &self,
        certs: &CertFiles,
        process: &ServiceProcess,
        method: &str,
        body: &str,
    ) -> testkit::GrpcurlOutput {
        grpcurl_mtls(certs, &["-d", body, &process.addr(), method])
    }
}

/// Hardening finding 2 (the operator's side): an order that needs a person
/// is parked and counted instead of being re-driven (and logged as an
/// ERROR) every second, and only the operator identity can act on it.
#[test]
fn a_parked_order_is_counted_and_only_the_operator_may_list_retry_or_resolve_it() {
    let mut shop = SecureShop::start();
    let operator = &shop.operator;
    let user = shop
        .call(
            operator,
            &shop.users,
            "mesh.users.v1.Users/CreateUser",
            r#"{"email":"parked@example.com","display_name":"Parked"}"#,
        )
        .json()["userId"]
        .as_str()
        .expect("user id")
        .to_owned();
    let stocked = shop.call(
        operator,
        &shop.inventory,
        "mesh.inventory.v1.Inventory/AddStock",
        r#"{"sku":"VASE-1","quantity":5,"unit_price_cents":900}"#,
    );
    assert!(stocked.success, "{stocked:?}");

    // Payments down: the order stops at CHARGE, its stock reserved.
    shop.payments.child.kill();
    let placed = shop.call(
        operator,
        &shop.orders,
        "mesh.orders.v1.Orders/PlaceOrder",
        &format!(
            r#"{{"request_id":"parked-1","user_id":"{user}","items":[{{"sku":"VASE-1","quantity":1}}]}}"#
        ),
    );
    assert!(!placed.success, "payments is down: {placed:?}");
    // Behind the saga's back the reservation vanishes: once charged, the
    // order is refused its Commit (NOT_FOUND) and only a person can tell
    // what happened.
    let tamper = delete_reservations(&shop.inventory_dir.path().join("inventory.db"));
    assert_eq!(tamper, 1, "one reservation deleted");
    let port = shop.payments.port;
    shop.payments = ServiceProcess::start(
        "payments",
        ServiceOptions {
            port: Some(port),
            ..options(&shop.agent, Some(shop.payments_dir.path()), vec![])
        },
    );

    // Parked once, listed for the operator with its reason.
    let listed = wait_until("the order to be parked", Duration::from_secs(30), || {
        let listed = shop.call(
            operator,
            &shop.orders,
            "mesh.orders.v1.Orders/ListParkedOrders",
            "{}",
        );
        (listed.success && listed.json()["orders"].is_array()).then(|| listed.json())
    });
    let parked = &listed["orders"][0];
    assert_eq!(parked["reason"], "inventory_refused", "{listed}");
    assert_eq!(parked["step"], "COMMIT", "{listed}");
    assert!(
        parked["detail"]
            .as_str()
            .unwrap_or("")
            .contains("inventory refused to commit reservation"),
        "{listed}"
    );
    assert_eq!(parked["order"]["status"], "ORDER_STATUS_PENDING");
    let order_id = parked["order"]["orderId"]
        .as_str()
        .expect("order id")
        .to_owned();

    // Counted in the metric, and shown by `mesh status`.
    wait_until("the parked metric", Duration::from_secs(10), || {
        let scrape = scrape_metrics(&shop.orders_metrics);
        (scrape.sum("orders_parked", &[("reason", "inventory_refused")]) == 1.0).then_some(())
    });
    let mut status = Command::new(binary("mesh"));
    status
        .args(["status", "--consul-addr", &shop.agent.http_addr()])
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN_FILE");
    let output = output_within(status, Duration::from_secs(30));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("parked orders: 1 wait for an operator (inventory_refused 1)"),
        "{table}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Parked once: one ERROR line, not one per recovery round.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        parked_log_lines(&shop.orders),
        1,
        "{}",
        shop.orders.child.log()
    );

    // Another identity may call orders, but not these RPCs.
    let users_identity = shop.agent.cert_files("users");
    for (method, body) in [
        ("ListParkedOrders", "{}".to_owned()),
        (
            "RetryParkedOrder",
            format!(r#"{{"order_id":"{order_id}"}}"#),
        ),
        (
            "ResolveParkedOrder",
            format!(r#"{{"order_id":"{order_id}","status":"ORDER_STATUS_REJECTED","note":"x"}}"#),
        ),
    ] {
        shop.call(
            &users_identity,
            &shop.orders,
            &format!("mesh.orders.v1.Orders/{method}"),
            &body,
        )
        .assert_status(
            "PermissionDenied",
            &[&format!(
                "{method} is for the operator identity only; the caller is users"
            )],
        );
    }

    // A retry without a fix parks it again, with the same reason.
    shop.call(
        operator,
        &shop.orders,
        "mesh.orders.v1.Orders/RetryParkedOrder",
        &format!(r#"{{"order_id":"{order_id}"}}"#),
    )
    .assert_status("Internal", &["waits for an operator"]);
    assert_eq!(
        parked_log_lines(&shop.orders),
        2,
        "{}",
        shop.orders.child.log()
    );

    // Resolved by hand: the payment was refunded outside the saga.
    let payment_id = shop
        .call(
            operator,
            &shop.orders,
            "mesh.orders.v1.Orders/GetOrder",
            &format!(r#"{{"order_id":"{order_id}"}}"#),
        )
        .json()["paymentId"]
        .as_str()
        .expect("the captured payment")
        .to_owned();
    let refunded = shop.call(
        operator,
        &shop.payments,
        "mesh.payments.v1.Payments/Refund",
        &format!(r#"{{"payment_id":"{payment_id}"}}"#),
    );
    assert!(refunded.success, "{refunded:?}");
    let resolved = shop.call(
        operator,
        &shop.orders,
        "mesh.orders.v1.Orders/ResolveParkedOrder",
        &format!(
            r#"{{"order_id":"{order_id}","status":"ORDER_STATUS_REJECTED","note":"reservation lost; payment {payment_id} refunded by hand"}}"#
        ),
    );
    assert!(resolved.success, "{resolved:?}");
    assert_eq!(resolved.json()["status"], "ORDER_STATUS_REJECTED");
    let listed = shop
        .call(
            operator,
            &shop.orders,
            "mesh.orders.v1.Orders/ListParkedOrders",
            "{}",
        )
        .json();
    assert!(
        listed["orders"].as_array().is_none_or(Vec::is_empty),
        "{listed}"
    );
    wait_until(
        "the parked metric back to 0",
        Duration::from_secs(10),
        || {
            let scrape = scrape_metrics(&shop.orders_metrics);
            (scrape.sum("orders_parked", &[]) == 0.0).then_some(())
        },
    );
}

/// The ERROR lines orders logged when it parked an order.
fn parked_log_lines(orders: &ServiceProcess) -> usize {
    orders
        .child
        .log()
        .lines()
        .filter(|line| line.contains("ERROR") && line.contains("order parked"))
        .count()
}

/// Deletes every reservation (and its lines) from the inventory database
/// at `path` behind the service's back; returns how many.
fn delete_reservations(path: &Path) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("open the inventory database");
        sqlx::query("DELETE FROM reservation_lines")
            .execute(&pool)
            .await
            .expect("delete the lines");
        let deleted = sqlx::query("DELETE FROM reservations")
            .execute(&pool)
            .await
            .expect("delete the reservations")
            .rows_affected();
        pool.close().await;
        deleted
    })
}
