//! The routing decision's cost per call (a micro-benchmark, not a test):
//! `RoutingTable::decide` on chains Consul 1.8.7 served (recorded in
//! `discovery/tests/fixtures/`), with the headers a real mesh call carries.
//!
//! `cargo bench -p mesh --bench routing_decision` prints ns per decision for
//! each chain and whether the aim (≤ 2 µs) is met.
#![forbid(unsafe_code)]

use std::{hint::black_box, time::Instant};

use discovery::chain::DiscoveryChain;
use http::{HeaderMap, HeaderValue};
use mesh::client::routing::RoutingTable;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/discovery/tests/fixtures");
const AIM_NS: f64 = 2000.0;
const ITERATIONS: u32 = 1_000_000;
const RUNS: usize = 5;

fn table(name: &str) -> RoutingTable {
    let body = std::fs::read(format!("{FIXTURES}/chain_{name}.json")).expect("fixture");
    RoutingTable::compile(&DiscoveryChain::parse(&body).expect("chain")).expect("compiles")
}

/// What tonic and the mesh client put on a call (and one canary header).
fn headers(canary: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "tonic/0.14.9"),
        ("grpc-timeout", "9999m"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if canary {
        headers.insert("x-canary", HeaderValue::from_static("1"));
    }
    headers
}

/// The best of [`RUNS`] runs of [`ITERATIONS`] decisions, ns per decision.
fn measure(table: &RoutingTable, path: &str, headers: &HeaderMap) -> f64 {
    (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..ITERATIONS {
                black_box(table.decide(black_box(path), black_box(headers)));
            }
            started.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let get_item = "/mesh.inventory.v1.Inventory/GetItem";
    let cases = [
        ("default chain (one resolver)", "default", false),
        (
            "canary: router, no header → splitter 100/0",
            "canary",
            false,
        ),
        ("canary: router, x-canary: 1 → v2", "canary", true),
        (
            "flattened 60/20.2/19.8 splitter, 3 services",
            "nested",
            false,
        ),
        (
            "7 routes: regex path, header regex/suffix/prefix/invert",
            "unusable",
            false,
        ),
    ];
    println!("routing decision per call (best of {RUNS} × {ITERATIONS}), aim ≤ {AIM_NS} ns");
    let mut worst: f64 = 0.0;
    for (label, fixture, canary) in cases {
        let table = table(fixture);
        let ns = measure(&table, get_item, &headers(canary));
        worst = worst.max(ns);
        println!("  {ns:8.1} ns  {label}");
    }
    println!(
        "worst {worst:.1} ns: aim {}",
        if worst <= AIM_NS { "met" } else { "not met" }
    );
}
