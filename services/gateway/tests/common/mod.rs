//! The shop behind the gateway for the gateway's behaviour tests: a real
//! Consul agent with the shipped intentions, a real Redis as the events'
//! broker, real `users`, `inventory`, `payments`, `orders` and `shipping`
//! processes with Connect mTLS, and a real `gateway` process with the local
//! token key; `curl` and `grpcurl` call it as a client would.
#![allow(dead_code)] // Each test binary uses a part of it.

use std::{path::PathBuf, process::Command, time::Duration};

use gateway::auth::dev::{DevKeys, DEV_AUDIENCE, DEV_ISSUER};
use testkit::{free_port, ConsulAgent, RedisServer, ServiceOptions, ServiceProcess};

/// The intentions `mesh up` and the Kubernetes manifests ship (plus the
/// test-only service's), most specific first.
pub const INTENTIONS: &[(&str, &str, &str)] = &[
    ("orders", "users", "allow"),
    ("orders", "inventory", "allow"),
    ("orders", "payments", "allow"),
    ("gateway", "users", "allow"),
    ("gateway", "inventory", "allow"),
    ("gateway", "orders", "allow"),
    ("gateway", "shipping", "allow"),
    ("gateway", "payments", "deny"),
    ("gateway", "gatewaytest", "allow"),
    ("operator", "*", "allow"),
    ("*", "*", "deny"),
];

/// The services behind the gateway, in start order.
pub const SERVICES: [&str; 5] = ["users", "inventory", "payments", "orders", "shipping"];

/// The running shop.
pub struct Shop {
    pub agent: ConsulAgent,
    /// The events' broker: orders publishes to it, shipping consumes.
    pub broker: RedisServer,
    pub services: Vec<ServiceProcess>,
    pub gateway: ServiceProcess,
    /// The gateway's `--metrics-listen` address.
    pub metrics: String,
    pub keys: DevKeys,
    pub dir: tempfile::TempDir,
}

/// How to start it.
#[derive(Default)]
pub struct ShopOptions {
    /// More environment for every process (e.g. the OTLP endpoint).
    pub env: Vec<(String, String)>,
    /// More gateway flags.
    pub gateway_args: Vec<String>,
}

impl Shop {
    /// Starts everything and waits until every service passes in Consul.
    pub fn start(options: ShopOptions) -> Self {
        let agent = ConsulAgent::start();
        for (source, destination, action) in INTENTIONS {
            agent.set_intention(source, destination, action);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = DevKeys::ensure(&dir.path().join("keys")).expect("the local token key");
        let data = dir.path().join("data");
        let broker = RedisServer::start();
        let mut services = Vec::new();
        for name in SERVICES {
            let mut args = vec!["--check-interval".to_owned(), "500".to_owned()];
            if ["orders", "shipping"].contains(&name) {
                args.extend(["--broker-url".to_owned(), broker.url()]);
            }
            services.push(ServiceProcess::start(
                name,
                ServiceOptions {
                    consul: Some(agent.http_addr()),
                    mtls: true,
                    data_dir: Some(data.clone()),
                    args,
                    env: options.env.clone(),
                    ..ServiceOptions::default()
                },
            ));
        }
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut shop = Self {
            gateway: start_gateway(&agent, &keys, &metrics, &options.env, &options.gateway_args),
            agent,
            broker,
            services,
            metrics,
            keys,
            dir,
        };
        for name in SERVICES.into_iter().chain(["gateway"]) {
            shop.agent.wait_passing(name, 1, Duration::from_secs(60));
        }
        shop.gateway.wait_serving(Duration::from_secs(30));
        shop
    }

    /// Another gateway on the same mesh (other limits, other descriptors).
    pub fn another_gateway(&self, args: &[&str]) -> ServiceProcess {
        let metrics = format!("127.0.0.1:{}", free_port());
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        start_gateway(&self.agent, &self.keys, &metrics, &[], &args)
    }

    /// `http://127.0.0.1:<gateway port><path>`.
    pub fn url(&self, path: &str) -> String {
        url(&self.gateway, path)
    }

    /// A token for `user_id` from the local key (what `mesh token` prints).
    pub fn token(&self, user_id: &str) -> String {
        self.keys
            .mint(user_id, Duration::from_secs(600))
            .expect("mint a token")
    }

    /// A token with any claims, signed with the local key.
    pub fn token_with(&self, claims: serde_json::Value) -> String {
        let pem = std::fs::read(&self.keys.signing_key).expect("the signing key");
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(gateway::auth::dev::DEV_KEY_ID.into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
        )
        .unwrap()
    }

    /// Adds stock through inventory's own API, as the `operator` (AddStock
    /// is not exposed by the gateway).
    pub fn stock(&self, sku: &str, quantity: i64, unit_price_cents: i64) {
        let inventory = self.service("inventory");
        let body = serde_json::json!({"sku": sku, "quantity": quantity, "unit_price_cents": unit_price_cents}).to_string();
        let output = testkit::grpcurl_mtls(
            &self.agent.cert_files("operator"),
            &[
                "-d",
                &body,
                &inventory.addr(),
                "mesh.inventory.v1.Inventory/AddStock",
            ],
        );
        assert!(output.success, "AddStock {sku}: {}", output.stderr);
    }

    /// A new user through `POST /v1/users` (the public sign-up); its id.
    pub fn sign_up(&self, name: &str) -> String {
        let reply = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &serde_json::json!({"email": format!("{name}@example.com"), "displayName": name})
                .to_string(),
            &self.url("/v1/users"),
        ]);
        assert_eq!(reply.status, 200, "sign-up of {name}: {reply:?}");
        reply.json()["userId"].as_str().expect("userId").to_owned()
    }

    /// The process of `name`.
    pub fn service(&self, name: &str) -> &ServiceProcess {
        self.services
            .iter()
            .find(|process| process.name == name)
            .unwrap_or_else(|| panic!("no {name} process"))
    }
}

fn start_gateway(
    agent: &ConsulAgent,
    keys: &DevKeys,
    metrics: &str,
    env: &[(String, String)],
    extra: &[String],
) -> ServiceProcess {
    let mut args: Vec<String> = [
        "--jwt-keys",
        &keys.jwks.display().to_string(),
        "--jwt-issuer",
        DEV_ISSUER,
        "--jwt-audience",
        DEV_AUDIENCE,
        "--metrics-listen",
        metrics,
        "--check-interval",
        "500",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    args.extend(extra.iter().cloned());
    ServiceProcess::start(
        "gateway",
        ServiceOptions {
            consul: Some(agent.http_addr()),
            mtls: true,
            args,
            env: env.to_vec(),
            ..ServiceOptions::default()
        },
    )
}

/// `http://127.0.0.1:<port of gateway><path>`.
pub fn url(gateway: &ServiceProcess, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", gateway.port)
}

/// What curl received.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy for binary bodies: see `raw`).
    pub body: String,
    /// The body's bytes.
    pub raw: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl Reply {
    /// The body as JSON (panics with the reply when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {self:?}"))
    }

    /// A response header (the first with that name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The `google.rpc.Status` code of an error body.
    pub fn grpc_code(&self) -> i64 {
        self.json()["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no code in {self:?}"))
    }
}

/// Runs the real `curl -sS -i` with `args` (bounded: 30 s) and parses the
/// status, headers and body of the final response.
pub fn curl(args: &[&str]) -> Reply {
    let output = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .expect("run curl (is it installed?)");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&output.stdout)
}

/// The last response of curl's `-i` output.
pub fn parse(output: &[u8]) -> Reply {
    let mut rest = output;
    loop {
        let split = rest
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header block in {:?}", String::from_utf8_lossy(output)));
        let (head, body) = (
            String::from_utf8_lossy(&rest[..split]).into_owned(),
            &rest[split + 4..],
        );
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {status_line:?}"));
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        return Reply {
            status,
            headers,
            body: String::from_utf8_lossy(body).into_owned(),
            raw: body.to_vec(),
        };
    }
}

/// Places an order of `quantity` WIDGET-1 for `user` over REST with `token`.
pub fn place_order(shop: &Shop, token: &str, user: &str, request_id: &str, quantity: u32) -> Reply {
    let body = serde_json::json!({"requestId": request_id, "userId": user, "items": [{"sku": "WIDGET-1", "quantity": quantity}]});
    curl_as(
        token,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
            &shop.url("/v1/orders"),
        ],
    )
}

/// `curl` with a bearer token.
pub fn curl_as(token: &str, args: &[&str]) -> Reply {
    let header = format!("Authorization: Bearer {token}");
    let mut all = vec!["-H", header.as_str()];
    all.extend_from_slice(args);
    curl(&all)
}

/// The repository's `proto/` folder (grpcurl reads the protos from there:
/// the gateway serves no reflection).
pub fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

/// grpcurl in plaintext against the gateway's port (HTTP/2 without TLS),
/// with the protos from `proto/`.
pub fn grpcurl_gateway(
    gateway: &ServiceProcess,
    proto: &str,
    extra: &[&str],
    method: &str,
) -> testkit::GrpcurlOutput {
    let dir = proto_dir().display().to_string();
    let address = format!("127.0.0.1:{}", gateway.port);
    let mut args: Vec<&str> = vec!["-import-path", &dir, "-proto", proto];
    args.extend_from_slice(extra);
    args.push(&address);
    args.push(method);
    testkit::grpcurl(&args)
}
