//! gRPC reflection v1, which grpcurl 1.8 does not speak: the service list a
//! server advertises there, read with tonic's generated reflection client.

use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

/// The services `address` (`host:port`, plaintext) lists through reflection
/// v1, in the order the server sent them. Panics with the cause on any error.
pub fn list_services_v1(address: &str) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("a valid URI")
            .connect()
            .await
            .unwrap_or_else(|error| panic!("connect to {address}: {error}"));
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap_or_else(|status| panic!("reflection v1 on {address}: {status}"))
            .into_inner();
        let response = responses
            .message()
            .await
            .unwrap_or_else(|status| panic!("reflection v1 on {address}: {status}"))
            .unwrap_or_else(|| panic!("reflection v1 on {address} sent no answer"));
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect(),
            other => panic!("reflection v1 on {address} answered {other:?}"),
        }
    })
}
