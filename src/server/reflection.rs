//! gRPC server reflection (v1 and v1alpha) that lists only what this server
//! serves: its own service, gRPC health and reflection itself. Every
//! descriptor of the project stays resolvable (`describe` of a message, of a
//! health or reflection type, and of the google.rpc error details a status
//! carries), but `list` never advertises another service's API.

use tonic_health::pb::health_server::SERVICE_NAME as HEALTH;
use tonic_reflection::{
    pb::{
        v1::{self, server_reflection_server::SERVICE_NAME as REFLECTION_V1},
        v1alpha::{self, server_reflection_server::SERVICE_NAME as REFLECTION_V1ALPHA},
    },
    server::{
        v1::{ServerReflection, ServerReflectionServer},
        Builder, Error,
    },
};

/// The services `list` shows for a server of `service`, sorted as grpcurl
/// prints them.
pub fn listed_services(service: &'static str) -> [&'static str; 4] {
    let mut names = [service, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA];
    names.sort_unstable();
    names
}

/// One builder for both versions: the same descriptors, the same list.
fn builder(service: &'static str) -> Builder<'static> {
    let descriptors = [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        // google.rpc error details (BadRequest…), so grpcurl prints them readably.
        tonic_types::pb::FILE_DESCRIPTOR_SET,
        // Both versions in both services, so either one describes the other.
        v1::FILE_DESCRIPTOR_SET,
        v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let builder = descriptors.into_iter().fold(
        Builder::configure(),
        Builder::register_encoded_file_descriptor_set,
    );
    listed_services(service)
        .into_iter()
        .fold(builder, Builder::with_service_name)
}

/// Reflection v1 for a server of `service`.
pub(crate) fn v1(
    service: &'static str,
) -> Result<ServerReflectionServer<impl ServerReflection>, Error> {
    builder(service).build_v1()
}

/// Reflection v1alpha (the version grpcurl 1.8 asks for) for a server of `service`.
pub(crate) fn v1alpha(
    service: &'static str,
) -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    Error,
> {
    builder(service).build_v1alpha()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_service_health_and_both_reflection_versions_sorted() {
        assert_eq!(
            listed_services("mesh.users.v1.Users"),
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "mesh.users.v1.Users",
            ]
        );
    }
}
