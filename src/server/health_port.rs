//! The plaintext health port (`--health-listen`): `grpc.health.v1` and
//! nothing else, for Consul's gRPC check and kubelet's gRPC probes, which
//! cannot present a Connect client certificate. It reports the same statuses
//! as the mesh port's health service (one reporter feeds both). Reflection
//! there knows the health descriptor only, so that `grpcurl -plaintext
//! <health port> grpc.health.v1.Health/Check` works without a `.proto` file
//! while no other service is even named.

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::health_server::{Health, HealthServer};

/// Serves `health` on `listener` until `stop` resolves.
pub(crate) async fn serve<H: Health>(
    listener: TcpListener,
    health: HealthServer<H>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), super::error::ServeError> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .serve_with_incoming_shutdown(incoming, stop)
        .await?;
    Ok(())
}
