//! The status codes the gRPC spec gives two failures every service can meet,
//! checked against real service processes with a plain tonic client (no
//! client-side limit or timer, so every code seen is the server's):
//!
//! - a request over the size limit → RESOURCE_EXHAUSTED, on all four services,
//!   and the service goes on serving;
//! - a request whose deadline passes on the server → DEADLINE_EXCEEDED, every
//!   time (tonic's own server answers CANCELLED "Timeout expired").

use std::time::Duration;

use mesh::{
    proto::users::v1::{users_client::UsersClient, GetUserRequest, ListUsersRequest},
    server::MAX_MESSAGE_BYTES,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_on_the_server_is_deadline_exceeded_every_time() {
    // Every reply of this instance comes 5 s late: any deadline below that
    // passes on the server while the answer is held back.
    let process = tokio::task::block_in_place(|| {
        ServiceProcess::start(
            "users",
            ServiceOptions {
                args: vec!["--inject-latency-ms".into(), "5000".into()],
                ..ServiceOptions::default()
            },
        )
    });
    let mut users = UsersClient::new(channel(&process).await);
    for timeout in [1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 5, 50, 200].map(Duration::from_millis) {
        let mut request = tonic::Request::new(GetUserRequest {
            user_id: "8d1c5c4e-93a5-4f7e-9d7c-2b4f5f6b0b1a".into(),
        });
        request.set_timeout(timeout);
        let status = users
            .get_user(request)
            .await
            .expect_err("the deadline passes long before the delayed reply");
        assert_eq!(
            status.code(),
            Code::DeadlineExceeded,
            "{timeout:?}: {status:?}"
        );
        assert!(
            status.message().contains("deadline"),
            "{timeout:?}: {status:?}"
        );
    }
}
