//! The traffic-management config entries the project ships
//! (`deploy/consul/config/*.json`, compiled in so that `mesh up --canary`
//! needs no checkout): `service-defaults` with protocol `grpc` for every
//! service, inventory's `service-resolver` (subsets v1 and v2, v2 failing
//! over to v1), its `service-splitter` (100/0) and its `service-router`
//! (`x-canary: 1` → v2). The same files are what `consul config write` takes
//! in the README's walkthrough, and what the Kubernetes Job writes.

use std::time::Duration;

use bytes::Bytes;
use discovery::{ConsulError, ConsulHttp};

/// Longest wait for one write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Every entry, in the order Consul accepts them: protocols first (L7 entries
/// need them), then the resolver (its subsets), the splitter, the router.
pub const ENTRIES: [(&str, &str); 8] = [
    (
        "service-defaults-users.json",
        include_str!("../../deploy/consul/config/service-defaults-users.json"),
    ),
    (
        "service-defaults-inventory.json",
        include_str!("../../deploy/consul/config/service-defaults-inventory.json"),
    ),
    (
        "service-defaults-payments.json",
        include_str!("../../deploy/consul/config/service-defaults-payments.json"),
    ),
    (
        "service-defaults-orders.json",
        include_str!("../../deploy/consul/config/service-defaults-orders.json"),
    ),
    (
        "service-defaults-shipping.json",
        include_str!("../../deploy/consul/config/service-defaults-shipping.json"),
    ),
    (
        "inventory-resolver.json",
        include_str!("../../deploy/consul/config/inventory-resolver.json"),
    ),
    (
        "inventory-splitter.json",
        include_str!("../../deploy/consul/config/inventory-splitter.json"),
    ),
    (
        "inventory-router.json",
        include_str!("../../deploy/consul/config/inventory-router.json"),
    ),
];

/// A config entry Consul did not take.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the config entry {file}")]
pub struct WriteError {
    /// The entry's file name (or what the caller calls it).
    pub file: String,
    /// Consul's answer.
    #[source]
    pub source: ConsulError,
}

/// Writes every entry (`PUT /v1/config`, what `consul config write` does):
/// the token needs `service:write` on each service.
pub async fn write_all(http: &ConsulHttp) -> Result<(), WriteError> {
    for (file, body) in ENTRIES {
        write(http, file, body).await?;
    }
    Ok(())
}

/// Writes one entry (JSON with `Kind` and `Name`).
pub async fn write(http: &ConsulHttp, file: &str, body: &str) -> Result<(), WriteError> {
    http.put(
        "/v1/config",
        "/v1/config",
        Bytes::from(body.to_owned()),
        WRITE_TIMEOUT,
    )
    .await
    .and_then(|answer| answer.success(&http::Method::PUT, "/v1/config"))
    .map_err(|source| WriteError {
        file: file.to_owned(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_json_of_a_known_kind_and_protocols_come_first() {
        let mut kinds = Vec::new();
        for (file, body) in ENTRIES {
            let entry: serde_json::Value =
                serde_json::from_str(body).unwrap_or_else(|error| panic!("{file}: {error}"));
            let kind = entry["Kind"].as_str().unwrap().to_owned();
            assert!(entry["Name"].is_string(), "{file}");
            kinds.push(kind);
        }
        assert_eq!(
            kinds,
            [
                "service-defaults",
                "service-defaults",
                "service-defaults",
                "service-defaults",
                "service-defaults",
                "service-resolver",
                "service-splitter",
                "service-router"
            ]
        );
        // Every gRPC service: nothing routes to an edge through the mesh.
        let grpc =
            crate::services::identities().filter(|identity| identity.grpc_service().is_some());
        for service in grpc.map(|identity| identity.name) {
            let body = ENTRIES
                .iter()
                .find(|(file, _)| *file == format!("service-defaults-{service}.json"))
                .unwrap_or_else(|| panic!("no service-defaults entry for {service}"))
                .1;
            let entry: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(entry["Protocol"], "grpc", "{service}");
            assert_eq!(entry["Name"], service);
        }
    }

    #[test]
    fn the_shipped_splits_walk_from_v1_to_v2() {
        let weights = |body: &str| -> Vec<(String, f64)> {
            let entry: serde_json::Value = serde_json::from_str(body).unwrap();
            entry["Splits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|split| {
                    (
                        split["ServiceSubset"].as_str().unwrap().to_owned(),
                        split["Weight"].as_f64().unwrap(),
                    )
                })
                .collect()
        };
        let start = weights(
            ENTRIES
                .iter()
                .find(|(file, _)| *file == "inventory-splitter.json")
                .expect("the splitter")
                .1,
        );
        assert_eq!(start, [("v1".into(), 100.0), ("v2".into(), 0.0)]);
        for (body, v1, v2) in [
            (
                include_str!("../../deploy/consul/config/splits/inventory-100-0.json"),
                100.0,
                0.0,
            ),
            (
                include_str!("../../deploy/consul/config/splits/inventory-90-10.json"),
                90.0,
                10.0,
            ),
            (
                include_str!("../../deploy/consul/config/splits/inventory-0-100.json"),
                0.0,
                100.0,
            ),
        ] {
            assert_eq!(weights(body), [("v1".into(), v1), ("v2".into(), v2)]);
        }
    }
}
