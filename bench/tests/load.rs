//! `mesh-bench`: the report counts what the servers did — 300 AddStock of one
//! unit grow BENCH-ADD by exactly 300, directly (plaintext, `--mtls off`) and
//! through the mesh (Connect mTLS, the default) — and `discovery` follows a
//! large service and cleans up after itself.

use std::{
    process::{Command, Output},
    time::Duration,
};

use testkit::{
    binary, grpcurl, grpcurl_mtls, output_within, CertFiles, ConsulAgent, ServiceOptions,
    ServiceProcess,
};

/// `mesh-bench <args>` to completion (bounded), seeing only the Consul
/// variables the test passes as flags.
fn lab(args: &[&str]) -> Output {
    let mut command = Command::new(binary("mesh-bench"));
    command.args(args);
    for variable in discovery::CONSUL_ENVIRONMENT {
        command.env_remove(variable);
    }
    output_within(command, Duration::from_secs(90))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// BENCH-ADD's available units, read with grpcurl (0 when unknown); over
/// mTLS with `certs`, else plaintext.
fn bench_add_stock(address: &str, certs: Option<&CertFiles>) -> i64 {
    let args = [
        "-d",
        r#"{"sku":"BENCH-ADD"}"#,
        address,
        "mesh.inventory.v1.Inventory/GetItem",
    ];
    let item = match certs {
        Some(certs) => grpcurl_mtls(certs, &args),
        None => grpcurl(&args),
    };
    if !item.success {
        assert!(item.stderr.contains("NotFound"), "{item:?}");
        return 0;
    }
    let json = item.json();
    json["available"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .or_else(|| json["available"].as_i64())
        .unwrap_or_else(|| panic!("no available count: {json}"))
}

/// Runs the bench and returns its JSON report, checking the stable fields.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let output = lab(args);
    let report = testkit::json_report(&output);
    for field in [
        "via",
        "rpc",
        "concurrency",
        "requests",
        "ok",
        "errors",
        "duration_s",
        "rps",
    ] {
        assert!(!report[field].is_null(), "no {field}: {report}");
    }
    for field in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            report["latency_us"][field].as_u64().is_some(),
            "no latency {field}: {report}"
        );
    }
    report
}

fn assert_300_ok(report: &serde_json::Value, via: &str) {
    assert_eq!(report["via"], via, "{report}");
    assert_eq!(report["rpc"], "add-stock", "{report}");
    assert_eq!(report["concurrency"], 8, "{report}");
    assert_eq!(report["requests"], 300, "{report}");
    assert_eq!(report["ok"], 300, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(report["latency_us"]["p50"].as_u64() <= report["latency_us"]["max"].as_u64());
}

#[test]
fn load_direct_add_stock_counts_exactly_300_on_the_server() {
    let inventory = ServiceProcess::start("inventory", ServiceOptions::default());
    let address = inventory.addr();
    let before = bench_add_stock(&address, None);
    let report = bench_json(&[
        "load",
        "--mtls",
        "off",
        "--rpc",
        "add-stock",
        "--requests",
        "300",
        "--concurrency",
        "8",
        "--direct",
        &address,
        "--json",
    ]);
    assert_300_ok(&report, "direct");
    assert_eq!(report["address"], address.as_str());
    assert_eq!(bench_add_stock(&address, None) - before, 300);
}

#[test]
fn load_through_the_mesh_spreads_300_add_stock_over_two_instances_exactly() {
    let agent = ConsulAgent::start();
    let data = tempfile::tempdir().expect("temp dir");
    let options = |instance: &str| ServiceOptions {
        consul: Some(agent.http_addr()),
        data_dir: Some(data.path().to_owned()),
        instance_id: Some(instance.to_owned()),
        args: vec!["--check-interval".into(), "500".into()],
        mtls: true,
        ..ServiceOptions::default()
    };
    let first = ServiceProcess::start("inventory", options("a"));
    let _second = ServiceProcess::start("inventory", options("b"));
    agent.wait_passing("inventory", 2, Duration::from_secs(30));
    // The test agent has no intentions: Consul's default (ACLs off) allows.
    let certs = agent.cert_files("operator");
    let before = bench_add_stock(&first.addr(), Some(&certs));

    let consul = agent.http_addr();
    let report = bench_json(&[
        "load",
        "--rpc",
        "add-stock",
        "--requests",
        "300",
        "--concurrency",
        "8",
        "--consul-addr",
        &consul,
        "--json",
    ]);
    assert_300_ok(&report, "mesh");
    // Both instances share one database: either one shows the total.
    assert_eq!(bench_add_stock(&first.addr(), Some(&certs)) - before, 300);
}

#[test]
fn load_prints_a_text_report_for_a_paced_timed_run() {
    let inventory = ServiceProcess::start("inventory", ServiceOptions::default());
    let address = inventory.addr();
    let output = lab(&[
        "load",
        "--mtls",
        "off",
        "--rpc",
        "get-item",
        "--duration",
        "1s",
        "--rate",
        "200/s",
        "--concurrency",
        "4",
        "--direct",
        &address,
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}{}", stderr(&output));
    assert!(text.contains("get-item (inventory) via direct"), "{text}");
    assert!(
        text.contains("latency µs") && text.contains("p99.9"),
        "{text}"
    );
    // 200/s for 1 s: about 200 requests, and never far more.
    let requests: u64 = text
        .split_whitespace()
        .skip_while(|word| *word != "requests")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count: {text}"));
    assert!(
        (150..=205).contains(&requests),
        "{requests} requests at 200/s for 1 s:\n{text}"
    );
}

#[test]
fn load_health_needs_no_storage_and_reports_a_timeline() {
    let inventory = ServiceProcess::start("inventory", ServiceOptions::default());
    let address = inventory.addr();
    let report = bench_json(&[
        "load",
        "--mtls",
        "off",
        "--rpc",
        "health",
        "--duration",
        "1s",
        "--concurrency",
        "2",
        "--timeline",
        "250ms",
        "--direct",
        &address,
        "--json",
    ]);
    assert_eq!(report["rpc"], "health", "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    let ok = report["ok"].as_u64().unwrap();
    assert!(ok > 0, "{report}");
    let windows = report["timeline"].as_array().expect("a timeline");
    // 1 s in 250 ms windows (a last request may start just before the end).
    assert!((4..=5).contains(&windows.len()), "{report}");
    for (n, window) in windows.iter().enumerate() {
        assert_eq!(window["t_ms"], n as u64 * 250, "{window}");
        assert!(
            window["p50_us"].as_u64() <= window["max_us"].as_u64(),
            "{window}"
        );
    }
    let counted: u64 = windows
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, report["requests"].as_u64().unwrap(), "{report}");
}

#[test]
fn discovery_follows_a_large_service_into_the_balancer_and_cleans_up() {
    let agent = ConsulAgent::start();
    // The target only answers health checks; it need not be registered.
    let target = ServiceProcess::start("users", ServiceOptions::default());
    let consul = agent.http_addr();
    let output = lab(&[
        "discovery",
        "--endpoints",
        "40",
        "--changes",
        "4",
        "--warm-requests",
        "200",
        "--target",
        &target.addr(),
        "--consul-addr",
        &consul,
        "--json",
    ]);
    let report = testkit::json_report(&output);
    assert_eq!(report["endpoints"], 40, "{report}");
    let changes = report["changes"].as_array().expect("changes");
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| c["change"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["remove", "add", "remove", "add"], "{report}");
    for change in changes {
        // The balancer takes the set after the resolver has published it.
        assert!(
            change["balancer_ms"].as_f64() >= change["resolver_ms"].as_f64(),
            "{change}"
        );
    }
    let connections = report["connections"].as_u64().unwrap();
    assert!((1..=40).contains(&connections), "{report}");
    assert!(
        report["bytes_per_endpoint"].as_f64().unwrap() >= 0.0,
        "{report}"
    );
    // Every catalog entry is gone again.
    let left = agent.get_json("/v1/catalog/service/mesh-bench-discovery");
    assert_eq!(left, serde_json::json!([]), "{left}");
}

/// A `/proc/loadavg`-style file saying the machine's 1-minute load is `load`.
fn loadavg_file(load: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), format!("{load} 0.50 0.40 1/200 4242\n")).expect("write loadavg");
    file
}

#[test]
fn quiet_refuses_a_busy_machine_unless_told_to_run_anyway() {
    let busy = loadavg_file("3.50");
    let busy_path = busy.path().to_str().unwrap();
    let refused = lab(&["quiet", "--loadavg-file", busy_path]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let message = stderr(&refused);
    assert!(
        message.contains("busy: 1-minute load average 3.50 is above 1")
            && message.contains("--busy-ok"),
        "{message}"
    );

    let anyway = testkit::json_report(&lab(&["quiet", "--busy-ok", "--loadavg-file", busy_path]));
    assert_eq!(anyway["load_average_1m"], 3.5, "{anyway}");
    assert_eq!(anyway["busy"], true, "{anyway}");
    assert_eq!(anyway["busy_ok"], true, "{anyway}");

    let quiet = loadavg_file("0.20");
    let answer = testkit::json_report(&lab(&[
        "quiet",
        "--loadavg-file",
        quiet.path().to_str().unwrap(),
    ]));
    assert_eq!(answer["busy"], false, "{answer}");
    assert_eq!(answer["busy_ok"], false, "{answer}");
    // A higher limit makes the same load quiet.
    let raised = lab(&["quiet", "--max-load", "4", "--loadavg-file", busy_path]);
    assert!(raised.status.success(), "{}", stderr(&raised));
}

#[test]
fn quiet_with_settle_waits_for_the_load_to_fall_and_then_answers() {
    let file = loadavg_file("2.40");
    let path = file.path().to_owned();
    // The machine quiets down 2 s into the wait (as the load left by a
    // build decays).
    let quieting = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        std::fs::write(&path, "0.30 0.90 1.10 1/200 4242\n").expect("write loadavg");
    });
    let started = std::time::Instant::now();
    let answer = testkit::json_report(&lab(&[
        "quiet",
        "--settle",
        "60s",
        "--loadavg-file",
        file.path().to_str().unwrap(),
    ]));
    quieting.join().expect("the writer thread");
    assert_eq!(answer["busy"], false, "{answer}");
    assert_eq!(answer["load_average_1m"], 0.3, "{answer}");
    assert!(answer["settled_s"].as_u64().unwrap() >= 2, "{answer}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "it answers once quiet, not at the end of --settle"
    );

    // Still busy when the wait is over: refused, as without --settle.
    let busy = loadavg_file("3.10");
    let refused = lab(&[
        "quiet",
        "--settle",
        "5s",
        "--loadavg-file",
        busy.path().to_str().unwrap(),
    ]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("waiting up to"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn load_direct_to_two_instances_calls_each_in_turn_and_reports_the_machine_load() {
    let first = ServiceProcess::start("inventory", ServiceOptions::default());
    let second = ServiceProcess::start("inventory", ServiceOptions::default());
    let before = [
        bench_add_stock(&first.addr(), None),
        bench_add_stock(&second.addr(), None),
    ];
    let busy = loadavg_file("2.75");
    let both = format!("{},{}", first.addr(), second.addr());
    let report = bench_json(&[
        "load",
        "--mtls",
        "off",
        "--rpc",
        "add-stock",
        "--requests",
        "300",
        "--concurrency",
        "8",
        "--direct",
        &both,
        "--loadavg-file",
        busy.path().to_str().unwrap(),
        "--json",
    ]);
    assert_300_ok(&report, "direct");
    assert_eq!(report["machine"]["load_average_1m"], 2.75, "{report}");
    assert_eq!(report["machine"]["busy"], true, "{report}");
    let grown = [
        bench_add_stock(&first.addr(), None) - before[0],
        bench_add_stock(&second.addr(), None) - before[1],
    ];
    // Calls in turn: each instance takes half (the fixture call goes to the first).
    assert_eq!(grown[0] + grown[1], 300, "{grown:?}");
    assert!((grown[0] - grown[1]).abs() <= 2, "{grown:?}");

    let refused = lab(&[
        "load",
        "--mtls",
        "off",
        "--rpc",
        "health",
        "--direct",
        &format!("{},", first.addr()),
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("an empty address in the list"),
        "{}",
        stderr(&refused)
    );
}
