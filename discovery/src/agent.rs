//! The local agent's service endpoints: register and deregister through
//! consulrs, look a registration up directly (consulrs cannot decode Consul
//! 1.8's answer, see `docs/adr/0001-consul-client.md`).

use std::{collections::HashMap, time::Duration};

use consulrs::{
    api::{
        check::common::AgentServiceCheck,
        service::{common::AgentServiceConnect, requests::RegisterServiceRequest},
    },
    client::{ConsulClient, ConsulClientSettings},
    error::ClientError,
    service,
};
use http::StatusCode;

use crate::{
    config::ConsulConfig,
    error::{chain, excerpt, ConsulError},
    http::{encode, ConsulHttp},
    registration::{go_duration, ServiceRegistration},
};

const REGISTER_PATH: &str = "/v1/agent/service/register";
const DEREGISTER_PATH: &str = "/v1/agent/service/deregister";
const SERVICE_PATH: &str = "/v1/agent/service";

/// The local Consul agent.
pub(crate) struct Agent {
    consul: ConsulClient,
    http: ConsulHttp,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // consulrs' settings derive Debug with the token in clear: never print them.
        f.debug_struct("Agent")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl Agent {
    pub(crate) fn new(config: &ConsulConfig) -> Result<Self, ConsulError> {
        // Every field set explicitly: consulrs' builder would otherwise read
        // CONSUL_HTTP_TOKEN/CONSUL_CACERT/… behind our back.
        let settings = ConsulClientSettings {
            address: config.base_url().to_owned(),
            ca_certs: Vec::new(),
            client_cert: None,
            client_key: None,
            token: config.token().map(str::to_owned),
            verify: true,
            version: 1,
        };
        let consul = ConsulClient::new(settings).map_err(|error| ConsulError::Transport {
            method: "-".into(),
            path: "/v1/agent".into(),
            message: format!("cannot build the consulrs client: {}", chain(&error)),
        })?;
        Ok(Self {
            consul,
            http: ConsulHttp::new(config),
        })
    }

    /// PUT /v1/agent/service/register with a GRPC check.
    pub(crate) async fn register(
        &self,
        registration: &ServiceRegistration,
        timeout: Duration,
    ) -> Result<(), ConsulError> {
        let check = AgentServiceCheck {
            grpc: Some(registration.check_target()),
            interval: Some(go_duration(registration.check.interval)),
            timeout: Some(go_duration(registration.check.timeout)),
            deregister_critical_service_after: Some(go_duration(
                registration.check.deregister_critical_after,
            )),
            ..AgentServiceCheck::default()
        };
        let mut request = RegisterServiceRequest::builder();
        request
            .id(registration.id.clone())
            .address(registration.address.to_string())
            .port(u64::from(registration.port))
            .tags(registration.tags.clone())
            .meta(
                registration
                    .meta
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect::<HashMap<_, _>>(),
            )
            .check(check);
        if registration.connect_native {
            request.connect(Box::new(AgentServiceConnect {
                native: Some(true),
                sidecar_service: None,
            }));
        }
        let call = service::register(&self.consul, &registration.name, Some(&mut request));
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result
                .map(drop)
                .map_err(|error| from_consulrs("PUT", REGISTER_PATH, error)),
            Err(_) => Err(timed_out("PUT", REGISTER_PATH, timeout)),
        }
    }

    /// PUT /v1/agent/service/deregister/<id>. Consul 1.8 answers 200 for an
    /// unknown ID; newer agents answer 404, which counts as done too.
    pub(crate) async fn deregister(&self, id: &str, timeout: Duration) -> Result<(), ConsulError> {
        let call = service::deregister(&self.consul, id, None);
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(ClientError::APIError { code: 404, .. })) => Ok(()),
            Ok(Err(error)) => Err(from_consulrs("PUT", DEREGISTER_PATH, error)),
            Err(_) => Err(timed_out("PUT", DEREGISTER_PATH, timeout)),
        }
    }

    /// GET /v1/agent/service/<id>: whether the agent knows the service (200) or
    /// not (404). Cheap, and unlike a re-registration it changes no index.
    pub(crate) async fn is_registered(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<bool, ConsulError> {
        let answer = self
            .http
            .get(
                SERVICE_PATH,
                &format!("{SERVICE_PATH}/{}", encode(id)),
                timeout,
            )
            .await?;
        match answer.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(ConsulError::Status {
                method: "GET".into(),
                path: SERVICE_PATH.into(),
                status: status.as_u16(),
                body: excerpt(&answer.body),
            }),
        }
    }
}

fn timed_out(method: &str, path: &str, timeout: Duration) -> ConsulError {
    ConsulError::Timeout {
        method: method.into(),
        path: path.into(),
        timeout,
    }
}

fn from_consulrs(method: &str, path: &str, error: ClientError) -> ConsulError {
    match error {
        ClientError::APIError { code, message } => ConsulError::Status {
            method: method.into(),
            path: path.into(),
            status: code,
            body: excerpt(message.unwrap_or_default().as_bytes()),
        },
        other => ConsulError::Transport {
            method: method.into(),
            path: path.into(),
            message: chain(&other),
        },
    }
}

#[cfg(test)]
mod tests {
    /// Why the lookup does not go through consulrs: Consul 1.8.7 answers
    /// `GET /v1/agent/service/<id>` with `TaggedAddresses` as objects
    /// (`{"lan_ipv4": {"Address": …, "Port": …}}`), which consulrs 0.1 declares
    /// as `HashMap<String, String>`, so `consulrs::service::read` fails to decode
    /// every registration that has an IP address. Recorded from the real agent.
    #[test]
    fn consulrs_cannot_decode_consul_1_8_agent_service() {
        let recorded = include_str!("../tests/fixtures/agent_service.json");
        let value: serde_json::Value = serde_json::from_str(recorded).unwrap();
        assert!(value["TaggedAddresses"]["lan_ipv4"].is_object(), "{value}");
        let decoded =
            serde_json::from_str::<consulrs::api::service::common::AgentService>(recorded);
        assert!(
            decoded.is_err(),
            "consulrs decodes it now: use consulrs::service::read again"
        );
    }
}
