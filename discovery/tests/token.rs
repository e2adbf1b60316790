//! The ACL token goes on every Consul call and nowhere else: a loopback
//! listener records the raw requests of the registrar and the resolver, and
//! every log line and Debug output of the run is searched for the token.
//! The same listener answers every blocking query at once, which shows the
//! watch's rate limit.

mod common;

use std::{
    collections::BTreeMap,
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::eventually;
use discovery::{
    ConsulConfig, GrpcCheck, Registrar, RegistrarOptions, Resolver, ResolverOptions,
    ServiceRegistration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const TOKEN: &str = "t0k3n-5ecret-2f9a";

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Recorded {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// A fake Consul agent: records each request, answers like Consul would.
async fn fake_consul() -> (SocketAddr, Log) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log = Log::default();
    let requests = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, requests.clone()));
        }
    });
    (addr, log)
}

async fn serve(mut stream: TcpStream, log: Log) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => body.extend_from_slice(&chunk[..read]),
        }
    }
    let recorded = Recorded {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (status, extra, answer) = match (recorded.method.as_str(), recorded.path()) {
        ("GET", "/v1/health/service/denied") => ("403 Forbidden", "", "Permission denied".to_owned()),
        ("GET", path) if path.starts_with("/v1/health/service/") => (
            "200 OK",
            "X-Consul-Index: 7\r\nContent-Type: application/json\r\n",
            serde_json::json!([{
                "Node": {"Node": "fake", "Address": "127.0.0.1"},
                "Service": {"ID": "tokened-1", "Service": "tokened", "Address": "127.0.0.1", "Port": 4000, "Tags": [], "Meta": {}},
                "Checks": []
            }])
            .to_string(),
        ),
        ("GET", path) if path.starts_with("/v1/agent/service/") => ("200 OK", "Content-Type: application/json\r\n", "{}".to_owned()),
        ("PUT", _) => ("200 OK", "", String::new()),
        _ => ("404 Not Found", "", "not here".to_owned()),
    };
    log.lock().expect("log").push(recorded);
    let response = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Every log event of the test binary, at TRACE, dependencies included.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("logs").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(logs.clone());
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .try_init()
        .expect("the only subscriber of this test binary");
    logs
}

fn requests(log: &Log, method: &str, path_prefix: &str) -> Vec<Recorded> {
    log.lock()
        .expect("log")
        .iter()
        .filter(|request| request.method == method && request.path().starts_with(path_prefix))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_on_every_call_and_nowhere_else() {
    let logs = capture_logs();
    let (addr, log) = fake_consul().await;
    let config =
        ConsulConfig::new(&format!("http://{addr}"), Some(TOKEN.to_owned())).expect("config");

    let mut check = GrpcCheck::new("mesh.test.v1.Echo");
    check.interval = Duration::from_secs(1);
    let registration = ServiceRegistration {
        id: "tokened-1".into(),
        name: "tokened".into(),
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 4000,
        tags: vec!["blue".into()],
        meta: BTreeMap::from([("version".into(), "0.1.0".into())]),
        check,
        connect_native: false,
    };
    let options = RegistrarOptions {
        anti_entropy_interval: Duration::from_millis(200),
        ..RegistrarOptions::default()
    };
    let handle = Registrar::spawn(config.clone(), registration, options);
    let resolver = Resolver::spawn(
        config.clone(),
        "tokened",
        ResolverOptions {
            wait: Duration::from_secs(1),
            ..ResolverOptions::default()
        },
    );
    let denied = Resolver::spawn(config.clone(), "denied", ResolverOptions::default());

    eventually(
        "a register call, lookups and blocking queries",
        Duration::from_secs(10),
        || async {
            (handle.is_registered()
                && requests(&log, "GET", "/v1/agent/service/tokened-1").len() >= 2
                && requests(&log, "GET", "/v1/health/service/tokened")
                    .iter()
                    .any(|request| request.target.contains("index=7"))
                && denied.snapshot().errors >= 1)
                .then_some(())
        },
    )
    .await;

    // A watch answered at once, every time, is held to its rate limit
    // (a burst of 5, then 5 per second) instead of spinning.
    let before = requests(&log, "GET", "/v1/health/service/tokened").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = requests(&log, "GET", "/v1/health/service/tokened").len() - before;
    eprintln!("{during} health requests in 2 s against a watch that never blocks");
    assert!((5..=12).contains(&during), "{during}");

    let snapshot = resolver.snapshot();
    assert_eq!(snapshot.index, 7);
    assert_eq!(snapshot.updates, 1, "identical answers are not updates");
    let denied_snapshot = denied.snapshot();
    let denied_error = denied_snapshot.last_error.clone().expect("403 error");
    assert!(
        denied_error.contains("403") && denied_error.contains("Permission denied"),
        "{denied_error}"
    );

    let registrations_sent = requests(&log, "PUT", "/v1/agent/service/register");
    assert_eq!(
        registrations_sent.len(),
        1,
        "registered once, then only looked"
    );
    let body: serde_json::Value =
        serde_json::from_str(&registrations_sent[0].body).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({
            "ID": "tokened-1",
            "Name": "tokened",
            "Address": "127.0.0.1",
            "Port": 4000,
            "Tags": ["blue"],
            "Meta": {"version": "0.1.0"},
            "Check": {
                "GRPC": "127.0.0.1:4000/mesh.test.v1.Echo",
                "Interval": "1000ms",
                "Timeout": "1000ms",
                "DeregisterCriticalServiceAfter": "60000ms"
            }
        })
    );

    let debug_outputs = format!(
        "{config:?} {handle:?} {:?} {resolver:?} {snapshot:?} {denied_snapshot:?} {denied_error}",
        handle.state()
    );
    handle.deregister().await.expect("deregister");
    assert_eq!(
        requests(&log, "PUT", "/v1/agent/service/deregister/tokened-1").len(),
        1
    );
    drop((resolver, denied));

    let all = log.lock().expect("log").clone();
    assert!(all.len() >= 5);
    for request in &all {
        assert_eq!(
            request.headers.get("x-consul-token").map(String::as_str),
            Some(TOKEN),
            "{} {} without the token",
            request.method,
            request.target
        );
        assert!(
            !request.target.contains(TOKEN),
            "token in a URL: {}",
            request.target
        );
    }
    assert!(!debug_outputs.contains(TOKEN), "{debug_outputs}");
    let logs = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(logs.contains("registered in Consul"), "the capture works");
    assert!(!logs.contains(TOKEN), "the token was logged");
}
