//! Adding an annotated RPC exposes it with no gateway code change: a proto
//! the build has never seen (`tests/proto/`, compiled here with protoc), a
//! service implementing it (served in this test through the mesh's own
//! bootstrap: Connect mTLS, Consul registration), and a gateway given the
//! descriptor set. Its un-annotated method stays unexposed; the deadline a
//! caller asks for reaches the service as its grpc-timeout, capped.

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use clap::Parser as _;
use mesh::service::ServiceIdentity;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use tonic::{body::Body, server::NamedService, Status};

use crate::common::{curl, curl_as, url, Shop};

const ECHO: &str = "mesh.gatewaytest.v1.Echo";
static IDENTITY: ServiceIdentity = ServiceIdentity::grpc("gatewaytest", ECHO, 0);

/// Compiles the test proto into an encoded descriptor set at `out`.
fn compile(out: &Path) {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status =
        std::process::Command::new(protoc_bin_vendored::protoc_bin_path().expect("protoc"))
            .arg("--include_imports")
            .arg(format!("--descriptor_set_out={}", out.display()))
            .arg("-I")
            .arg(manifest.join("tests/proto"))
            .arg("-I")
            .arg(manifest.join("../../proto"))
            .arg("-I")
            .arg(protoc_bin_vendored::include_path().expect("protoc's includes"))
            .arg("mesh/gatewaytest/v1/echo.proto")
            .status()
            .expect("run protoc");
    assert!(status.success(), "protoc failed");
}

#[derive(clap::Parser)]
struct Flags {
    #[command(flatten)]
    service: mesh::config::ServiceArgs,
}

/// The echo service: answers Echo with what it was sent, the subject the
/// gateway vouched for, and — for the text `timeout?` — the grpc-timeout
/// it was given; `sleep:<ms>` makes it slow. Hidden exists too.
#[derive(Clone)]
struct EchoService {
    pool: DescriptorPool,
}

impl NamedService for EchoService {
    const NAME: &'static str = ECHO;
}

impl tower::Service<http::Request<Body>> for EchoService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let handler = Echo {
            pool: self.pool.clone(),
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(gateway::codec::BytesCodec);
            Ok(grpc.unary(handler, request).await)
        })
    }
}

#[derive(Clone)]
struct Echo {
    pool: DescriptorPool,
}

impl tonic::server::UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let pool = self.pool.clone();
        Box::pin(async move {
            let subject = mesh::caller::Caller::of(&request)
                .subject()
                .unwrap_or_default()
                .to_owned();
            let timeout = request
                .metadata()
                .get("grpc-timeout")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let input = DynamicMessage::decode(
                pool.get_message_by_name("mesh.gatewaytest.v1.EchoRequest")
                    .unwrap(),
                request.into_inner(),
            )
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
            let text = input
                .get_field_by_name("text")
                .unwrap()
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(millis) = text.strip_prefix("sleep:") {
                tokio::time::sleep(Duration::from_millis(millis.parse().unwrap_or(0))).await;
            }
            let mut reply = DynamicMessage::new(
                pool.get_message_by_name("mesh.gatewaytest.v1.EchoReply")
                    .unwrap(),
            );
            for field in ["target", "text", "count", "tags", "mode"] {
                reply
                    .set_field_by_name(field, input.get_field_by_name(field).unwrap().into_owned());
            }
            if text == "timeout?" {
                reply.set_field_by_name("text", Value::String(timeout));
            }
            reply.set_field_by_name("subject", Value::String(subject));
            Ok(tonic::Response::new(Bytes::from(reply.encode_to_vec())))
        })
    }
}

/// Serves the echo service through the mesh's bootstrap, registered in the
/// shop's Consul as `gatewaytest`.
async fn serve_echo(shop: &Shop, pool: DescriptorPool) -> tokio::task::JoinHandle<()> {
    let consul = shop.agent.http_addr();
    let flags = Flags::parse_from([
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--consul-addr",
        &consul,
        "--check-interval",
        "500",
        "--drain",
        "0",
    ]);
    let bound = mesh::server::bind(&IDENTITY, &flags.service)
        .await
        .expect("bind the echo service");
    tokio::spawn(async move {
        if let Err(error) = bound.serve(EchoService { pool }).await {
            panic!("the echo service stopped: {error}");
        }
    })
}

fn echo_text(reply: &crate::common::Reply) -> String {
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()["text"].as_str().unwrap_or_default().to_owned()
}

pub async fn an_annotated_rpc_of_a_new_proto_is_exposed_with_no_gateway_change(shop: &Shop) {
    let descriptors = shop.dir.path().join("echo.binpb");
    compile(&descriptors);
    let mut pool = DescriptorPool::new();
    pool.decode_file_descriptor_set(std::fs::read(&descriptors).unwrap().as_slice())
        .unwrap();
    let echo = serve_echo(shop, pool).await;
    tokio::task::block_in_place(|| {
        shop.agent
            .wait_passing("gatewaytest", 1, Duration::from_secs(60))
    });
    tokio::task::block_in_place(|| checks(shop, &descriptors));
    echo.abort();
}

fn checks(shop: &Shop, descriptors: &Path) {
    let gateway = shop.another_gateway(&[
        "--descriptor-set",
        &descriptors.display().to_string(),
        "--request-timeout",
        "1s",
        "--max-request-timeout",
        "2s",
    ]);

    // The annotated method: a nested path field, a verb, the query.
    let shouted = curl(&[&url(
        &gateway,
        "/v1/echo/box%201:shout?text=hi&count=3&tags=a&tags=b&mode=MODE_LOUD",
    )]);
    assert_eq!(shouted.status, 200, "{shouted:?}");
    assert_eq!(
        shouted.json(),
        serde_json::json!({"target": {"name": "box 1"}, "text": "hi", "count": "3", "tags": ["a", "b"], "mode": "MODE_LOUD", "subject": ""})
    );
    // Its additional binding with a JSON body; a token's subject reaches the service.
    let alice = shop.sign_up("alice-echo");
    let posted = curl_as(
        &shop.token(&alice),
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"target":{"name":"x"},"text":"yo"}"#,
            &url(&gateway, "/v1/echo"),
        ],
    );
    assert_eq!(posted.status, 200, "{posted:?}");
    assert_eq!(posted.json()["subject"], alice.as_str());
    assert_eq!(
        curl(&[&url(&gateway, "/v1/echo/x:shout?volume=11")]).status,
        400
    );

    // The OpenAPI document follows; the main gateway knows nothing of it.
    let document = curl(&[&url(&gateway, "/openapi.json")]).json();
    assert!(
        document["paths"]["/v1/echo/{target.name}:shout"]["get"].is_object(),
        "{document}"
    );
    assert_eq!(curl(&[&shop.url("/v1/echo/x:shout")]).status, 404);

    // The un-annotated method: not on REST, not on gRPC; the annotated one is.
    let includes = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/proto")
            .display()
            .to_string(),
        crate::common::proto_dir().display().to_string(),
    ];
    let address = format!("127.0.0.1:{}", gateway.port);
    let grpc = |method: &str| {
        testkit::grpcurl(&[
            "-import-path",
            &includes[0],
            "-import-path",
            &includes[1],
            "-proto",
            "mesh/gatewaytest/v1/echo.proto",
            "-d",
            r#"{"text":"hello"}"#,
            &address,
            method,
        ])
    };
    grpc("mesh.gatewaytest.v1.Echo/Hidden").assert_status("Unimplemented", &["404"]);
    let echoed = grpc("mesh.gatewaytest.v1.Echo/Echo");
    assert!(echoed.success, "{echoed:?}");
    assert_eq!(echoed.json()["text"], "hello");
    let hidden = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{}",
        &url(&gateway, "/mesh.gatewaytest.v1.Echo/Hidden"),
    ]);
    assert_eq!(hidden.status, 404, "{hidden:?}");

    // Deadlines: the default (1 s here) and the caller's, capped at 2 s,
    // become the service's grpc-timeout; a slow answer is 504.
    let seen = |extra: &[&str]| {
        let mut args = extra.to_vec();
        let target = url(&gateway, "/v1/echo/t:shout?text=timeout%3F");
        args.push(&target);
        let text = echo_text(&curl(&args));
        mesh::deadline::parse_grpc_timeout(&text).unwrap_or_else(|| panic!("grpc-timeout {text:?}"))
    };
    let default = seen(&[]);
    assert!(
        default <= Duration::from_secs(1) && default > Duration::from_millis(200),
        "{default:?}"
    );
    let capped = seen(&["-H", "X-Request-Timeout: 1h"]);
    assert!(
        capped <= Duration::from_secs(2) && capped > Duration::from_secs(1),
        "{capped:?}"
    );
    let asked = seen(&["-H", "X-Request-Timeout: 700ms"]);
    assert!(asked <= Duration::from_millis(700), "{asked:?}");
    let slow = curl(&[
        "-H",
        "X-Request-Timeout: 300ms",
        &url(&gateway, "/v1/echo/t:shout?text=sleep%3A3000"),
    ]);
    assert_eq!(slow.status, 504, "{slow:?}");
    assert_eq!(slow.grpc_code(), 4, "DEADLINE_EXCEEDED");
}
