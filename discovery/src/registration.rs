//! What a service tells Consul about itself.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::error::ConfigError;

/// One service instance, registered through the local agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRegistration {
    /// Unique instance ID, by convention `<name>-<instance-id>`.
    pub id: String,
    /// Consul service name (`users`, `orders`…).
    pub name: String,
    /// Address clients dial; never unspecified (`0.0.0.0`, `::`).
    pub address: IpAddr,
    /// Port clients dial; never 0 (register the bound port).
    pub port: u16,
    /// Consul tags.
    pub tags: Vec<String>,
    /// Consul service meta: `version`, `proto_package`, `instance`, maybe `metrics_port`.
    pub meta: BTreeMap<String, String>,
    /// The gRPC health check Consul runs against the instance.
    pub check: GrpcCheck,
    /// Registered as Connect-native (`"Connect": {"Native": true}`): the
    /// instance speaks Connect mTLS itself, so Consul shows it in the mesh,
    /// intentions apply to it and `/v1/health/connect/<name>` lists it.
    pub connect_native: bool,
}

/// A Consul `GRPC` check: Consul calls `grpc.health.v1.Health/Check` for
/// `grpc_service` at `<address>:<port>` (IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCheck {
    /// Full gRPC service name, e.g. `mesh.users.v1.Users`.
    pub grpc_service: String,
    /// How often Consul checks (default 2 s).
    pub interval: Duration,
    /// How long one check may take (default 1 s).
    pub timeout: Duration,
    /// Consul removes the instance after its check was critical this long
    /// (default 1 min, which is also Consul's minimum).
    pub deregister_critical_after: Duration,
    /// The port Consul checks when health is served on its own plaintext port
    /// (Consul's check cannot present a Connect client certificate); `None`:
    /// the service port.
    pub port: Option<u16>,
}

impl GrpcCheck {
    /// A check of `grpc_service` with the defaults: interval 2 s, timeout 1 s,
    /// deregister after 1 min critical.
    pub fn new(grpc_service: impl Into<String>) -> Self {
        Self {
            grpc_service: grpc_service.into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            deregister_critical_after: Duration::from_secs(60),
            port: None,
        }
    }
}

impl ServiceRegistration {
    /// `address:port`.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// The check target Consul dials: `127.0.0.1:50051/mesh.users.v1.Users`,
    /// `[::1]:50051/mesh.users.v1.Users` (the health port when there is one).
    pub fn check_target(&self) -> String {
        let port = self.check.port.unwrap_or(self.port);
        format!(
            "{}/{}",
            SocketAddr::new(self.address, port),
            self.check.grpc_service
        )
    }

    /// Refuses registrations Consul would reject or that no client could use.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |reason: &str| {
            Err(ConfigError::InvalidRegistration {
                id: self.id.clone(),
                reason: reason.to_owned(),
            })
        };
        if self.id.trim().is_empty() {
            return fail("the service ID is empty");
        }
        if self.name.trim().is_empty() {
            return fail("the service name is empty");
        }
        if self.id.chars().any(char::is_control) || self.name.chars().any(char::is_control) {
            return fail("the service ID or name has control characters");
        }
        if self.address.is_unspecified() {
            return fail("the address is unspecified (0.0.0.0 or ::): register an address clients can dial (--advertise)");
        }
        if self.port == 0 {
            return fail("port 0: register the port actually bound");
        }
        if self.check.grpc_service.trim().is_empty() {
            return fail("the gRPC check names no service");
        }
        if self.check.interval.is_zero() || self.check.timeout.is_zero() {
            return fail("the check interval and timeout must be positive");
        }
        if self.check.deregister_critical_after.is_zero() {
            return fail("deregister_critical_after must be positive");
        }
        Ok(())
    }
}

/// A duration as Go's `time.ParseDuration` reads it (`2000ms`), at least 1 ms.
pub(crate) fn go_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis().max(1))
}

#[cfg(test)]
pub(crate) fn example(address: IpAddr, port: u16) -> ServiceRegistration {
    ServiceRegistration {
        id: "users-1".into(),
        name: "users".into(),
        address,
        port,
        tags: vec!["v1".into()],
        meta: BTreeMap::from([("version".into(), "0.1.0".into())]),
        check: GrpcCheck::new("mesh.users.v1.Users"),
        connect_native: false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn check_defaults() {
        let check = GrpcCheck::new("mesh.users.v1.Users");
        assert_eq!(check.interval, Duration::from_secs(2));
        assert_eq!(check.timeout, Duration::from_secs(1));
        assert_eq!(check.deregister_critical_after, Duration::from_secs(60));
    }

    #[test]
    fn check_targets_bracket_ipv6() {
        let v4 = example(Ipv4Addr::LOCALHOST.into(), 50051);
        assert_eq!(v4.check_target(), "127.0.0.1:50051/mesh.users.v1.Users");
        let v6 = example(Ipv6Addr::LOCALHOST.into(), 50051);
        assert_eq!(v6.check_target(), "[::1]:50051/mesh.users.v1.Users");
        let mut health_port = example(Ipv4Addr::LOCALHOST.into(), 50051);
        health_port.check.port = Some(51051);
        assert_eq!(
            health_port.check_target(),
            "127.0.0.1:51051/mesh.users.v1.Users"
        );
    }

    #[test]
    fn validation_refuses_undialable_registrations() {
        assert!(example(Ipv4Addr::LOCALHOST.into(), 1).validate().is_ok());
        let unspecified_v4 = example(Ipv4Addr::UNSPECIFIED.into(), 1)
            .validate()
            .unwrap_err();
        assert!(
            unspecified_v4.to_string().contains("unspecified"),
            "{unspecified_v4}"
        );
        assert!(example(Ipv6Addr::UNSPECIFIED.into(), 1).validate().is_err());
        assert!(example(Ipv4Addr::LOCALHOST.into(), 0).validate().is_err());
        let mut empty_service = example(Ipv4Addr::LOCALHOST.into(), 1);
        empty_service.check.grpc_service.clear();
        assert!(empty_service.validate().is_err());
        let mut no_id = example(Ipv4Addr::LOCALHOST.into(), 1);
        no_id.id = " ".into();
        assert!(no_id.validate().is_err());
        let mut zero_interval = example(Ipv4Addr::LOCALHOST.into(), 1);
        zero_interval.check.interval = Duration::ZERO;
        assert!(zero_interval.validate().is_err());
    }

    #[test]
    fn durations_are_go_durations() {
        assert_eq!(go_duration(Duration::from_secs(2)), "2000ms");
        assert_eq!(go_duration(Duration::from_micros(10)), "1ms");
        assert_eq!(go_duration(Duration::from_secs(60)), "60000ms");
    }
}
