//! Calls to the services, through the mesh client with the gateway's own
//! Connect identity: discovery, balancing, budgeted retries, deadlines and
//! ejection come with it. A call carries the encoded request, the deadline
//! (as `grpc-timeout`), the caller's subject as [`mesh::caller::SUBJECT_HEADER`]
//! (believed by the services because it comes from the `gateway` identity),
//! and the trace context of the current span (added by the mesh client).

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use http::uri::PathAndQuery;
use mesh::client::{Channel, MeshClient};
use tonic::{metadata::MetadataValue, Status};

use crate::{api::ExposedMethod, auth::Subject, codec::BytesCodec};

/// Where calls go: one mesh channel per upstream service, made at start-up
/// (so that each Consul watch starts outside any request's span) and
/// looked up without a lock.
#[derive(Clone)]
pub struct Upstreams {
    channels: Arc<HashMap<String, Channel>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Channels through `mesh` to each of `services` (Consul names).
    pub fn new<'a>(mesh: &MeshClient, services: impl IntoIterator<Item = &'a str>) -> Self {
        let channels = services
            .into_iter()
            .map(|service| (service.to_owned(), mesh.channel(service)))
            .collect();
        Self {
            channels: Arc::new(channels),
        }
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
        let channel = self
            .channels
            .get(&method.upstream)
            .cloned()
            .ok_or_else(|| Status::internal(format!("no channel to {}", method.upstream)))?;
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(mesh::limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(mesh::limits::MAX_MESSAGE_BYTES);
        grpc.ready()
            .await
            .map_err(|error| Status::unavailable(format!("{}: {error}", method.upstream)))?;
        let response = grpc.unary(call, path, BytesCodec).await?;
        Ok(response.into_inner())
    }
}
