//! Protection at the edge, on a second gateway of the same mesh with tight
//! limits: body, URL and header limits, per-caller rate limits, the header
//! read timeout, CORS.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use testkit::ServiceProcess;

use crate::common::{curl, curl_as, url, Shop};

/// The second gateway's flags.
pub const STRICT: &[&str] = &[
    "--rate-limit",
    "1",
    "--rate-burst",
    "2",
    "--anonymous-rate-limit",
    "1",
    "--anonymous-rate-burst",
    "2",
    "--max-body-bytes",
    "2048",
    "--max-url-bytes",
    "512",
    "--max-header-bytes",
    "8192",
    "--header-read-timeout",
    "1s",
    "--cors-origin",
    "http://shop.example",
];

/// The status code and `Retry-After` of `count` requests made by one curl
/// run (one connection, so they come quickly whatever the machine's load).
fn statuses(target: &str, count: usize, extra: &[&str]) -> Vec<(u16, String)> {
    let mut command = Command::new("curl");
    command
        .args([
            "-sS",
            "--max-time",
            "30",
            "-w",
            "%{http_code} %header{retry-after}\\n",
        ])
        .args(extra);
    for _ in 0..count {
        command.args(["-o", "/dev/null", target]);
    }
    let output = command.output().expect("run curl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (code, retry_after) = line.split_once(' ').unwrap_or((line, ""));
            Some((code.trim().parse().ok()?, retry_after.trim().to_owned()))
        })
        .collect()
}

pub fn limits_answer_413_414_431_and_429(shop: &Shop, strict: &ServiceProcess) {
    let alice = shop.sign_up("alice-limits");

    let big = format!(
        r#"{{"email":"a@b.c","displayName":"{}"}}"#,
        "x".repeat(4096)
    );
    let too_large = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &big,
        &url(strict, "/v1/users"),
    ]);
    assert_eq!(too_large.status, 413, "{too_large:?}");
    assert_eq!(too_large.grpc_code(), 8, "RESOURCE_EXHAUSTED");

    let long_url = url(strict, &format!("/v1/items/{}", "A".repeat(1000)));
    let too_long = curl(&[&long_url]);
    assert_eq!(too_long.status, 414, "{too_long:?}");

    let header = format!("X-Padding: {}", "p".repeat(10_000));
    let too_big_head = curl(&["-H", &header, &url(strict, "/v1/items/WIDGET-1")]);
    assert_eq!(too_big_head.status, 431, "{too_big_head:?}");

    // Anonymous callers (by address): the burst, then 429 with Retry-After.
    // Ten requests on one connection outrun a refill of one per second.
    let anonymous = statuses(&url(strict, "/v1/items/WIDGET-1"), 10, &[]);
    assert_eq!(anonymous.len(), 10, "{anonymous:?}");
    assert_eq!(anonymous[0].0, 200, "{anonymous:?}");
    let limited: Vec<&(u16, String)> = anonymous.iter().filter(|(code, _)| *code == 429).collect();
    assert!(!limited.is_empty(), "{anonymous:?}");
    for (_, retry_after) in &limited {
        let seconds: u64 = retry_after
            .parse()
            .unwrap_or_else(|_| panic!("Retry-After {retry_after:?}"));
        assert!((1..=2).contains(&seconds), "{anonymous:?}");
    }

    // A signed-in caller has its own bucket, not its address's (now empty).
    let token = shop.token(&alice);
    let bearer = format!("Authorization: Bearer {token}");
    let signed_in = statuses(
        &url(strict, &format!("/v1/users/{alice}")),
        10,
        &["-H", &bearer],
    );
    assert_eq!(
        signed_in[0].0, 200,
        "a fresh subject starts with a full bucket: {signed_in:?}"
    );
    assert!(
        signed_in.iter().any(|(code, _)| *code == 429),
        "{signed_in:?}"
    );

    // The main gateway's default limits are not this strict.
    let relaxed = curl_as(&token, &[&shop.url(&format!("/v1/users/{alice}"))]);
    assert_eq!(relaxed.status, 200, "{relaxed:?}");
}

/// A client that opens a connection and trickles its request headers is
/// disconnected once the header read timeout (1 s here) passes.
pub fn a_client_that_sends_its_headers_too_slowly_is_cut_off(strict: &ServiceProcess) {
    let mut socket = TcpStream::connect(("127.0.0.1", strict.port)).expect("connect");
    socket
        .write_all(b"GET /v1/items/WIDGET-1 HTTP/1.1\r\nHost: shop\r\n")
        .expect("write part of the head");
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = socket.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        read.is_ok(),
        "the gateway closed the connection instead of leaving it open: {read:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "closed only after {waited:?}"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
}

/// CORS for the configured origin only, exposing grpc-status and
/// grpc-message; no CORS headers at all without --cors-origin.
pub fn cors_only_for_configured_origins(shop: &Shop, strict: &ServiceProcess) {
    let preflight = |target: &str, origin: &str| {
        curl(&[
            "-X",
            "OPTIONS",
            "-H",
            &format!("Origin: {origin}"),
            "-H",
            "Access-Control-Request-Method: POST",
            "-H",
            "Access-Control-Request-Headers: content-type, x-grpc-web",
            target,
        ])
    };
    let allowed = preflight(&url(strict, "/v1/orders"), "http://shop.example");
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://shop.example"),
        "{allowed:?}"
    );
    let actual = curl(&[
        "-H",
        "Origin: http://shop.example",
        &url(strict, "/v1/items/NOPE"),
    ]);
    let exposed = actual
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_owned();
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{actual:?}"
    );

    let other = preflight(&url(strict, "/v1/orders"), "http://evil.example");
    assert_eq!(
        other.header("access-control-allow-origin"),
        None,
        "{other:?}"
    );
    let default = curl(&[
        "-H",
        "Origin: http://shop.example",
        &shop.url("/v1/items/WIDGET-1"),
    ]);
    assert_eq!(
        default.header("access-control-allow-origin"),
        None,
        "{default:?}"
    );
    assert_eq!(
        default.header("access-control-expose-headers"),
        None,
        "{default:?}"
    );
}
