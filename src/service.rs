//! Who a service is (its Consul name, what kind of service it is, its
//! default port) and which instance of it this process is.
//!
//! The kinds are what the tooling needs to know to run, deploy and check a
//! service without naming it: whether it serves a gRPC service of its own
//! (health checks, reflection, the grpcurl lines `mesh up` prints), whether
//! it owns a database (a `--data-dir` file, a PostgreSQL database and its
//! secret), and whether it consumes the broker's events.

/// The names a service is known by (a contract: docs/architecture.md, "Services").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// Consul service name, binary name and Connect identity, e.g. `users`.
    pub name: &'static str,
    /// What it serves and what it owns.
    pub kind: ServiceKind,
    /// Well-known port: gRPC services take consecutive ports from 50051
    /// (users 50051 … orders 50054), an edge an HTTP port (8080).
    pub default_port: u16,
}

/// What a service serves and owns (docs/adding-a-service.md has a section
/// per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// A gRPC service of its own, over its own database (users, inventory,
    /// payments, orders).
    Grpc {
        /// Full gRPC service name, e.g. `mesh.users.v1.Users`.
        grpc_service: &'static str,
    },
    /// A gRPC service over its own database that also consumes the
    /// broker's events (e.g. shipping, fed by orders' events).
    EventConsumer {
        /// Full gRPC service name, e.g. `mesh.shipping.v1.Shipping`.
        grpc_service: &'static str,
    },
    /// A front door: HTTP on its own port, calling the services through the
    /// mesh client with its own Connect identity; no gRPC service and no
    /// database of its own (e.g. the gateway).
    Edge,
}

impl ServiceIdentity {
    /// A gRPC service with a database ([`ServiceKind::Grpc`]).
    pub const fn grpc(name: &'static str, grpc_service: &'static str, default_port: u16) -> Self {
        Self {
            name,
            kind: ServiceKind::Grpc { grpc_service },
            default_port,
        }
    }

    /// The full gRPC service name, e.g. `mesh.users.v1.Users`; `None` for an edge.
    pub const fn grpc_service(&self) -> Option<&'static str> {
        match self.kind {
            ServiceKind::Grpc { grpc_service } | ServiceKind::EventConsumer { grpc_service } => {
                Some(grpc_service)
            }
            ServiceKind::Edge => None,
        }
    }

    /// Whether it keeps data in a database of its own (SQLite in
    /// `--data-dir`, or PostgreSQL from `DATABASE_URL`).
    pub const fn owns_database(&self) -> bool {
        !matches!(self.kind, ServiceKind::Edge)
    }

    /// Whether it consumes the broker's events.
    pub const fn consumes_events(&self) -> bool {
        matches!(self.kind, ServiceKind::EventConsumer { .. })
    }

    /// The protobuf package, e.g. `mesh.users.v1`; `None` for an edge.
    pub fn proto_package(&self) -> Option<&'static str> {
        let grpc_service = self.grpc_service()?;
        Some(
            grpc_service
                .rsplit_once('.')
                .map(|(package, _)| package)
                .unwrap_or(grpc_service),
        )
    }
}

/// `explicit`, or `<hostname>-<port>`.
pub(crate) fn instance_id(explicit: Option<&str>, port: u16) -> String {
    match explicit {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("{}-{port}", hostname()),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: ServiceIdentity = ServiceIdentity::grpc("users", "mesh.users.v1.Users", 50051);
    const SHIPPING: ServiceIdentity = ServiceIdentity {
        name: "shipping",
        kind: ServiceKind::EventConsumer {
            grpc_service: "mesh.shipping.v1.Shipping",
        },
        default_port: 50055,
    };
    const GATEWAY: ServiceIdentity = ServiceIdentity {
        name: "gateway",
        kind: ServiceKind::Edge,
        default_port: 8080,
    };

    #[test]
    fn proto_package_is_the_service_name_without_its_last_part() {
        assert_eq!(USERS.proto_package(), Some("mesh.users.v1"));
        assert_eq!(SHIPPING.proto_package(), Some("mesh.shipping.v1"));
        assert_eq!(GATEWAY.proto_package(), None);
    }

    #[test]
    fn each_kind_says_what_it_serves_and_owns() {
        assert_eq!(USERS.grpc_service(), Some("mesh.users.v1.Users"));
        assert!(USERS.owns_database() && !USERS.consumes_events());
        assert_eq!(SHIPPING.grpc_service(), Some("mesh.shipping.v1.Shipping"));
        assert!(SHIPPING.owns_database() && SHIPPING.consumes_events());
        assert_eq!(GATEWAY.grpc_service(), None);
        assert!(!GATEWAY.owns_database() && !GATEWAY.consumes_events());
    }

    #[test]
    fn instance_id_defaults_to_host_and_port() {
        assert_eq!(instance_id(Some("a1"), 1), "a1");
        assert!(instance_id(None, 50051).ends_with("-50051"));
        assert!(instance_id(Some(""), 7).ends_with("-7"));
    }
}
