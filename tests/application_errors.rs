//! What the mesh client makes of a server's error answers, against a real
//! tonic server registered in a real Consul agent: the largest status a
//! mesh server may send arrives intact, and no answer of a server — any
//! gRPC status, or a stream our HTTP/2 layer had to reset because the
//! answer's headers were too large — ejects the endpoint that gave it.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use mesh::{
    client::{ClientOptions, MeshClient},
    proto::users::v1::{
        users_client::UsersClient,
        users_server::{Users, UsersServer},
        CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, User,
    },
};
use testkit::{wait_until, ConsulAgent};
use tonic::{Code, Request, Response, Status};

/// The longest `grpc-message` a mesh server sends (bytes of UTF-8), and the
/// largest `grpc-status-details-bin` (bytes before base64): the bounds of
/// `mesh::limits`.
const MAX_MESSAGE_BYTES: usize = 2048;
const MAX_DETAILS_BYTES: usize = 8192;

/// A server whose GetUser answers what its `user_id` asks for.
struct Scripted;

/// The largest status a mesh server may send: a message of 3-byte
/// characters (percent-encoded, 9 bytes each on the wire) and full details.
fn largest_bounded_status() -> Status {
    let message = "€".repeat(MAX_MESSAGE_BYTES / 3);
    Status::with_details(
        Code::FailedPrecondition,
        message,
        Bytes::from(vec![0x5a; MAX_DETAILS_BYTES]),
    )
}

#[tonic::async_trait]
impl Users for Scripted {
    async fn create_user(&self, _: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        Err(match request.get_ref().user_id.as_str() {
            "unavailable" => Status::unavailable("the database is busy; try again"),
            "internal" => Status::internal("a bug"),
            "largest" => largest_bounded_status(),
            // Beyond what any mesh server sends (32 KiB of headers, the
            // limit is ~25 KiB): HTTP/2 resets the stream. (A header block
            // past five CONTINUATION frames, ~96 KiB, would make h2 close
            // the whole connection instead: a connection failure.)
            _ => Status::with_details(
                Code::FailedPrecondition,
                "oversized",
                Bytes::from(vec![0x5a; 24 * 1024]),
            ),
        })
    }

    async fn list_users(
        &self,
        _: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        Ok(Response::new(ListUsersResponse::default()))
    }
}

/// Serves [`Scripted`] on a free loopback port; registers it in `agent` as `scripted`.
async fn serve_scripted(agent: &ConsulAgent) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(UsersServer::new(Scripted))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    agent
        .put_text(
            "/v1/agent/service/register",
            &format!(
                r#"{{"ID":"scripted-1","Name":"scripted","Address":"127.0.0.1","Port":{}}}"#,
                address.port()
            ),
        )
        .expect("register the scripted server");
    address
}

/// A mesh client through `agent` that ejects an endpoint after
/// `eject_after_failures` consecutive failures, for a minute.
fn client(agent: &ConsulAgent, eject_after_failures: u32) -> MeshClient {
    let consul = discovery::ConsulConfig::new(&agent.http_addr(), None).expect("consul address");
    MeshClient::new(
        consul,
        ClientOptions {
            eject_after_failures,
            eject_min_backoff: Duration::from_secs(60),
            fail_fast_after: Duration::from_millis(500),
            watch_wait: Duration::from_secs(2),
            ..ClientOptions::default()
        },
    )
}

/// Hardening finding 1 (the client's side): a status with a bounded message
/// and bounded details (what a mesh server may send at most) was over
/// HTTP/2's default 16 KiB header-list limit of the client: the stream was
/// reset and the caller saw INTERNAL instead of the answer. The client's
/// limit is sized for what mesh servers send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_the_largest_status_a_mesh_server_sends_arrives_intact() {
    let agent = ConsulAgent::start();
    serve_scripted(&agent).await;
    // Ejection out of the way: this is about the answer itself.
    let mesh = client(&agent, 1000);
    wait_until(
        "the client sees the server",
        Duration::from_secs(20),
        || (mesh.resolver("scripted").snapshot().endpoints.len() == 1).then_some(()),
    );
    let status = UsersClient::new(mesh.channel("scripted"))
        .get_user(GetUserRequest {
            user_id: "largest".into(),
        })
        .await
        .unwrap_err();
    let expected = largest_bounded_status();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), expected.message());
    assert_eq!(status.details(), expected.details());
}

/// Hardening finding 1 (ejection): answers of a healthy server — an
/// UNAVAILABLE or INTERNAL status, or a stream reset because its answer's
/// headers were too large for the client — counted as transport failures,
/// so one hostile request could eject a healthy inventory endpoint. None of
/// them counts toward ejection now: the next call is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_a_servers_answers_never_eject_its_endpoint() {
    let agent = ConsulAgent::start();
    serve_scripted(&agent).await;
    let mesh = client(&agent, 2);
    wait_until(
        "the client sees the server",
        Duration::from_secs(20),
        || (mesh.resolver("scripted").snapshot().endpoints.len() == 1).then_some(()),
    );
    let mut users = UsersClient::new(mesh.channel("scripted"));
    for user_id in ["unavailable", "internal", "oversized"] {
        let retries_before = mesh.metrics("scripted").snapshot().retries;
        for _ in 0..4 {
            let status = users
                .get_user(GetUserRequest {
                    user_id: user_id.into(),
                })
                .await
                .unwrap_err();
            assert_ne!(status.code(), Code::Ok);
            if user_id == "oversized" {
                // Answered, but unreadable: INTERNAL, and not sent again
                // (the same request would get the same answer).
                assert_eq!(status.code(), Code::Internal, "{status:?}");
                assert!(status.message().contains("could not be read"), "{status:?}");
            }
        }
        if user_id == "oversized" {
            assert_eq!(mesh.metrics("scripted").snapshot().retries, retries_before);
        }
        users
            .list_users(ListUsersRequest::default())
            .await
            .unwrap_or_else(|status| {
                panic!("after {user_id:?} answers the endpoint still serves: {status:?}")
            });
    }
    assert_eq!(mesh.metrics("scripted").snapshot().ejections, 0);
}
