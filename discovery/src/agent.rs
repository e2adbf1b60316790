//! The local agent's service endpoints: register, deregister, look a
//! registration up — all through the crate's one HTTP client (ADR 0011 on
//! why consulrs no longer sends them).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

use crate::{
    config::ConsulConfig,
    error::{excerpt, ConsulError},
    http::{encode, ConsulHttp},
    registration::{go_duration, ServiceRegistration},
};

const REGISTER_PATH: &str = "/v1/agent/service/register";
const DEREGISTER_PATH: &str = "/v1/agent/service/deregister";
const SERVICE_PATH: &str = "/v1/agent/service";

/// The local Consul agent.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    http: ConsulHttp,
}

impl Agent {
    pub(crate) fn new(config: &ConsulConfig) -> Result<Self, ConsulError> {
        Ok(Self {
            http: ConsulHttp::new(config),
        })
    }

    /// PUT /v1/agent/service/register with a GRPC check.
    pub(crate) async fn register(
        &self,
        registration: &ServiceRegistration,
        timeout: Duration,
    ) -> Result<(), ConsulError> {
        let body = register_body(registration);
        self.http
            .put(REGISTER_PATH, REGISTER_PATH, body, timeout)
            .await
            .map_err(|error| {
                needs(
                    error,
                    format!("the token needs service:write on {:?}", registration.name),
                )
            })?
            .success(&http::Method::PUT, REGISTER_PATH)
            .map(drop)
    }

    /// PUT /v1/agent/service/deregister/<id>. Consul 1.8 answers 200 for an
    /// unknown ID; newer agents answer 404, which counts as done too.
    pub(crate) async fn deregister(&self, id: &str, timeout: Duration) -> Result<(), ConsulError> {
        let answer = self
            .http
            .put(
                DEREGISTER_PATH,
                &format!("{DEREGISTER_PATH}/{}", encode(id)),
                Bytes::new(),
                timeout,
            )
            .await
            .map_err(|error| {
                needs(
                    error,
                    "the token needs service:write on the service".to_owned(),
                )
            })?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        answer
            .success(&http::Method::PUT, DEREGISTER_PATH)
            .map(drop)
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
            .await
            .map_err(|error| {
                needs(
                    error,
                    "the token needs service:read on the service".to_owned(),
                )
            })?;
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

/// What a [`ConsulError::Denied`] token lacks, said precisely.
pub(crate) fn needs(error: ConsulError, what: String) -> ConsulError {
    match error {
        ConsulError::Denied {
            method,
            path,
            body,
            token_origin,
            ..
        } => ConsulError::Denied {
            method,
            path,
            body,
            token_origin,
            needs: what,
        },
        other => other,
    }
}

/// The agent API's register body: `None` fields are left out, since Consul
/// 1.8 rejects unknown or null fields it does not expect.
fn register_body(registration: &ServiceRegistration) -> Bytes {
    let mut body = json!({
        "ID": registration.id,
        "Name": registration.name,
        "Address": registration.address.to_string(),
        "Port": registration.port,
        "Tags": registration.tags,
        "Meta": registration.meta,
        "Check": {
            "GRPC": registration.check_target(),
            "Interval": go_duration(registration.check.interval),
            "Timeout": go_duration(registration.check.timeout),
            "DeregisterCriticalServiceAfter": go_duration(registration.check.deregister_critical_after),
        },
    });
    if registration.connect_native {
        body["Connect"] = json!({"Native": true});
    }
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// consulrs 0.1 (the user's first choice) is kept as the reference for
    /// the wire format: our body is what its `RegisterServiceRequest` sends.
    #[test]
    fn the_register_body_is_what_consulrs_sends() {
        use consulrs::api::{
            check::common::AgentServiceCheck, service::requests::RegisterServiceRequest,
        };
        let mut registration = crate::registration::example("127.0.0.1".parse().unwrap(), 50051);
        registration.connect_native = true;
        let ours: serde_json::Value =
            serde_json::from_slice(&register_body(&registration)).unwrap();
        let check = AgentServiceCheck {
            grpc: Some(registration.check_target()),
            interval: Some(go_duration(registration.check.interval)),
            timeout: Some(go_duration(registration.check.timeout)),
            deregister_critical_service_after: Some(go_duration(
                registration.check.deregister_critical_after,
            )),
            ..AgentServiceCheck::default()
        };
        let theirs = RegisterServiceRequest::builder()
            .name(registration.name.clone())
            .id(registration.id.clone())
            .address(registration.address.to_string())
            .port(u64::from(registration.port))
            .tags(registration.tags.clone())
            .meta(
                registration
                    .meta
                    .clone()
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .check(check)
            .connect(Box::new(
                consulrs::api::service::common::AgentServiceConnect {
                    native: Some(true),
                    sidecar_service: None,
                },
            ))
            .build()
            .unwrap();
        // consulrs' transport (rustify) leaves `None` fields out of the body.
        fn without_nulls(value: serde_json::Value) -> serde_json::Value {
            match value {
                serde_json::Value::Object(map) => map
                    .into_iter()
                    .filter(|(_, value)| !value.is_null())
                    .map(|(key, value)| (key, without_nulls(value)))
                    .collect(),
                other => other,
            }
        }
        let theirs = without_nulls(serde_json::to_value(&theirs).unwrap());
        assert_eq!(ours, theirs);
    }

    /// Why the lookup never went through consulrs: Consul 1.8.7 answers
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
