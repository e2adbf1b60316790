//! The status codes the gRPC spec gives two failures every service can meet,
//! checked against real service processes with clients that enforce nothing
//! themselves (a tonic client has no send limit; the deadline is sent over a
//! bare HTTP/2 stream, as tonic's client would enforce it), so every code seen
//! is the server's:
//!
//! - a request over the size limit → RESOURCE_EXHAUSTED, on all four services,
//!   and the service goes on serving;
//! - a request whose deadline passes on the server → DEADLINE_EXCEEDED, every
//!   time (tonic's own server answers CANCELLED "Timeout expired").

use mesh::{
    limits::MAX_MESSAGE_BYTES,
    proto::users::v1::{users_client::UsersClient, GetUserRequest, ListUsersRequest},
};
use testkit::{ServiceOptions, ServiceProcess};
use tonic::{transport::Channel, Code};

/// A message any method accepts on the wire: one field no service defines
/// (parsers skip unknown fields), padded to the wanted size.
#[derive(Clone, PartialEq, prost::Message)]
struct Padding {
    #[prost(bytes = "vec", tag = "1000")]
    padding: Vec<u8>,
}

async fn channel(process: &ServiceProcess) -> Channel {
    Channel::from_shared(format!("http://{}", process.addr()))
        .expect("a valid URI")
        .connect()
        .await
        .expect("connect")
}

/// Calls `path` with a message of `bytes` padding bytes; the answer's code.
async fn call_with_padding(channel: Channel, path: &'static str, bytes: usize) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let request = tonic::Request::new(Padding {
        padding: vec![b'x'; bytes],
    });
    let codec = tonic_prost::ProstCodec::<Padding, ()>::default();
    match grpc
        .unary(request, http::uri::PathAndQuery::from_static(path), codec)
        .await
    {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_size_limit_is_resource_exhausted_on_every_service() {
    for (name, path) in [
        ("users", "/mesh.users.v1.Users/CreateUser"),
        ("inventory", "/mesh.inventory.v1.Inventory/AddStock"),
        ("payments", "/mesh.payments.v1.Payments/Charge"),
        ("orders", "/mesh.orders.v1.Orders/PlaceOrder"),
    ] {
        let process =
            tokio::task::block_in_place(|| ServiceProcess::start(name, ServiceOptions::default()));
        let channel = channel(&process).await;
        let status = call_with_padding(channel.clone(), path, MAX_MESSAGE_BYTES + 1).await;
        assert_eq!(status.code(), Code::ResourceExhausted, "{name}: {status:?}");
        assert!(status.message().contains("too large"), "{name}: {status:?}");
        // Still serving on the same connection; nothing was written.
        if name == "users" {
            let mut users = UsersClient::new(channel);
            let listed = users
                .list_users(ListUsersRequest::default())
                .await
                .expect("ListUsers after the refused request");
            assert!(listed.get_ref().users.is_empty(), "{listed:?}");
        }
    }
}

/// Sends `GetUser` with `grpc-timeout: <timeout>` over a bare HTTP/2
/// connection (tonic's client would enforce the timeout itself) and returns
/// the server's `grpc-status` and `grpc-message`.
async fn get_user_with_timeout(address: &str, timeout: &str) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2");
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{address}/mesh.users.v1.Users/GetUser"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .expect("a request");
    let message = prost::Message::encode_to_vec(&GetUserRequest {
        user_id: "8d1c5c4e-93a5-4f7e-9d7c-2b4f5f6b0b1a".into(),
    });
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let (response, mut body) = client.send_request(request, false).expect("send");
    body.send_data(frame.into(), true)
        .expect("send the message");
    let response = response.await.expect("an answer");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    (header("grpc-status"), header("grpc-message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_on_the_server_is_deadline_exceeded_every_time() {
    // Every reply of this instance comes 5 s late: any deadline below that
    // passes on the server while the answer is held back.
    let process = tokio::task::block_in_place(|| {
        ServiceProcess::start(
            "users",
            ServiceOptions {
                args: vec!["--inject-latency".into(), "5000".into()],
                ..ServiceOptions::default()
            },
        )
    });
    for timeout in [
        "1m", "1m", "1m", "1m", "1m", "1m", "2m", "5m", "50m", "200m",
    ] {
        let (status, message) = get_user_with_timeout(&process.addr(), timeout).await;
        assert_eq!(
            status, "4",
            "{timeout}: DEADLINE_EXCEEDED expected, got {status} {message}"
        );
        assert!(message.contains("deadline"), "{timeout}: {message}");
    }
}
