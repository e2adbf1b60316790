//! `mesh-bench order-cost`: per service, the CPU and the context switches
//! one PlaceOrder costs, and the kernel's share of that CPU, for the
//! measured shop and a baseline, from the services' own `/proc` counters.

use std::{process::Command, time::Duration};

use testkit::{binary, output_within};

#[test]
fn order_cost_reports_cpu_context_switches_and_the_kernels_share_per_order_for_both_shops() {
    let bin = binary("users");
    let bin_dir = bin
        .parent()
        .expect("the binaries' folder")
        .to_str()
        .expect("utf-8 path");
    let mut command = Command::new(binary("mesh-bench"));
    command.args([
        "order-cost",
        "--baseline",
        bin_dir,
        "--rounds",
        "2",
        "--orders",
        "40",
        "--warmup",
        "10",
        "--concurrency",
        "4",
        "--json",
    ]);
    let output = output_within(command, Duration::from_secs(120));
    let report = testkit::json_report(&output);
    // The shop's four services, the same in every shop (their names are
    // the bench's to choose; the saga's order service is among them).
    let services = report["services"].as_array().expect("services");
    assert_eq!(services.len(), 4, "{report}");
    assert!(services.contains(&serde_json::json!("orders")), "{report}");
    let shops = report["shops"].as_array().expect("shops");
    assert_eq!(shops.len(), 2, "{report}");
    for shop in shops {
        let per_service = |field: &str| -> Vec<f64> {
            shop[field]
                .as_array()
                .unwrap_or_else(|| panic!("no {field}: {shop}"))
                .iter()
                .map(|value| value.as_f64().expect("a number"))
                .collect()
        };
        // Every service on the saga's writes does work for every order: it
        // uses CPU and it switches threads (its RPC's wake-ups, its
        // database's hand-offs). users answers only a customer's first order
        // (orders remembers users that exist, ADR 0025), and the bench's
        // orders are one customer's: its share may be nothing.
        for field in ["median_us_per_order", "median_switches_per_order"] {
            let values = per_service(field);
            assert_eq!(values.len(), 4, "{field}: {shop}");
            for (service, value) in services.iter().zip(&values) {
                if service != "users" {
                    assert!(*value > 0.0, "{service} {field}: {shop}");
                }
            }
        }
        let switches = per_service("median_switches_per_order");
        let total = shop["total_switches_per_order"].as_f64().expect("total");
        assert!(
            (switches.iter().sum::<f64>() - total).abs() < 1e-6,
            "{shop}"
        );
        assert_eq!(
            shop["switch_rounds"].as_array().map(Vec::len),
            Some(2),
            "{shop}"
        );
        assert!(
            shop["median_orders_per_second"].as_f64() > Some(0.0),
            "{shop}"
        );
        // Each order's RPCs and commits are system calls, and each service
        // runs code of its own: the kernel's share is neither none nor all.
        let kernel = shop["median_kernel_share"].as_f64().expect("kernel share");
        assert!(kernel > 0.0 && kernel < 1.0, "{shop}");
        assert_eq!(
            shop["kernel_shares"].as_array().map(Vec::len),
            Some(2),
            "{shop}"
        );
    }
}
