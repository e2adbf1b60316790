//! Calls to the services, through the mesh client with the gateway's own
//! Connect identity: discovery, balancing, budgeted retries, deadlines and
//! ejection come with it. A call carries the encoded request, the deadline
//! (as `grpc-timeout`), the caller's subject as [`mesh::caller::SUBJECT_HEADER`]
//! (believed by the services because it comes from the `gateway` identity),
//! and the trace context of the current span (added by the mesh client).

use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use mesh::client::{Channel, MeshClient};
use tonic::{metadata::MetadataValue, Status};

use crate::{api::ExposedMethod, auth::Subject, codec::BytesCodec};

/// Where calls go: the mesh (or, for tests and benchmarks, fixed channels).
#[derive(Clone)]
pub struct Upstreams {
    mesh: MeshClient,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Calls through `mesh`.
    pub fn new(mesh: MeshClient) -> Self {
        Self { mesh }
    }

    /// The channel to the Consul service `name`.
    fn channel(&self, name: &str) -> Channel {
        self.mesh.channel(name)
    }

    /// Calls `method` with the encoded `request`; the encoded response, or
    /// the service's (or the mesh client's) status.
    pub async fn call(
        &self,
        method: &ExposedMethod,
        request: Bytes,
        subject: Option<&Subject>,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        let path = PathAndQuery::try_from(method.grpc_path.as_str())
            .map_err(|_| Status::internal("invalid gRPC path"))?;
        let mut call = tonic::Request::new(request);
        call.set_timeout(timeout);
        if let Some(Subject(subject)) = subject {
            let value = MetadataValue::try_from(subject.as_str()).map_err(|_| {
                Status::invalid_argument("the token's subject is not a valid header value")
            })?;
            call.metadata_mut()
                .insert(mesh::caller::SUBJECT_HEADER, value);
        }
        let mut grpc = tonic::client::Grpc::new(self.channel(&method.upstream))
            .max_decoding_message_size(mesh::limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(mesh::limits::MAX_MESSAGE_BYTES);
        grpc.ready()
            .await
            .map_err(|error| Status::unavailable(format!("{}: {error}", method.upstream)))?;
        let response = grpc.unary(call, path, BytesCodec).await?;
        Ok(response.into_inner())
    }
}
