//! Consul intentions (`/v1/connect/intentions`): which service may call which.
//! Consul 1.8 refuses a second intention for the same pair, so [`ConnectCa::set_intention`]
//! updates the existing one in place.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};

use super::api::{decode, ConnectCa};
use crate::{error::ConsulError, http::encode};

const INTENTIONS_PATH: &str = "/v1/connect/intentions";
const TIMEOUT: Duration = Duration::from_secs(10);

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentionAction {
    /// Connections are allowed.
    Allow,
    /// Connections are refused.
    Deny,
}

impl std::fmt::Display for IntentionAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IntentionAction::Allow => "allow",
            IntentionAction::Deny => "deny",
        })
    }
}

/// One intention (`*` is the wildcard on either side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intention {
    /// Consul's ID (empty before creation).
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The calling service.
    #[serde(rename = "SourceName")]
    pub source: String,
    /// The called service.
    #[serde(rename = "DestinationName")]
    pub destination: String,
    /// Allow or deny.
    #[serde(rename = "Action")]
    pub action: IntentionAction,
    /// Free text shown in Consul's UI.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// Always `consul`.
    #[serde(rename = "SourceType", default = "consul_source_type")]
    pub source_type: String,
}

fn consul_source_type() -> String {
    "consul".to_owned()
}

impl Intention {
    /// `source → destination: action`.
    pub fn new(
        source: &str,
        destination: &str,
        action: IntentionAction,
        description: &str,
    ) -> Self {
        Self {
            id: String::new(),
            source: source.to_owned(),
            destination: destination.to_owned(),
            action,
            description: description.to_owned(),
            source_type: consul_source_type(),
        }
    }
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

impl ConnectCa {
    /// Every intention.
    pub async fn intentions(&self) -> Result<Vec<Intention>, ConsulError> {
        let answer = self
            .http
            .get(INTENTIONS_PATH, INTENTIONS_PATH, TIMEOUT)
            .await?;
        let list: Option<Vec<Intention>> = decode(INTENTIONS_PATH, answer)?.value;
        Ok(list.unwrap_or_default())
    }

    /// Creates `intention`, or updates the one with the same source and
    /// destination; returns its ID.
    pub async fn set_intention(&self, intention: &Intention) -> Result<String, ConsulError> {
        let existing = self.intentions().await?.into_iter().find(|known| {
            known.source == intention.source && known.destination == intention.destination
        });
        let mut body = intention.clone();
        body.id.clear();
        let json = Bytes::from(serde_json::to_vec(&body).expect("a plain struct serializes"));
        match existing {
            Some(known) => {
                let path = format!("{INTENTIONS_PATH}/{}", encode(&known.id));
                let answer = self
                    .http
                    .send(Method::PUT, INTENTIONS_PATH, &path, json, TIMEOUT)
                    .await?;
                decode::<serde_json::Value>(INTENTIONS_PATH, answer)?;
                Ok(known.id)
            }
            None => {
                let answer = self
                    .http
                    .send(
                        Method::POST,
                        INTENTIONS_PATH,
                        INTENTIONS_PATH,
                        json,
                        TIMEOUT,
                    )
                    .await?;
                Ok(decode::<Created>(INTENTIONS_PATH, answer)?.value.id)
            }
        }
    }

    /// Deletes the intention from `source` to `destination`; `false` when there was none.
    pub async fn delete_intention(
        &self,
        source: &str,
        destination: &str,
    ) -> Result<bool, ConsulError> {
        let Some(known) = self
            .intentions()
            .await?
            .into_iter()
            .find(|known| known.source == source && known.destination == destination)
        else {
            return Ok(false);
        };
        let path = format!("{INTENTIONS_PATH}/{}", encode(&known.id));
        let answer = self
            .http
            .send(
                Method::DELETE,
                INTENTIONS_PATH,
                &path,
                Bytes::new(),
                TIMEOUT,
            )
            .await?;
        decode::<serde_json::Value>(INTENTIONS_PATH, answer)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intentions_serialize_as_consul_expects() {
        let intention = Intention::new("orders", "payments", IntentionAction::Allow, "shop");
        let json = serde_json::to_value(&intention).unwrap();
        assert_eq!(json["SourceName"], "orders");
        assert_eq!(json["DestinationName"], "payments");
        assert_eq!(json["Action"], "allow");
        assert_eq!(json["SourceType"], "consul");
        assert!(json.get("ID").is_none());
    }
}
