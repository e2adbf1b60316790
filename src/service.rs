//! Who a service is (its Consul name, gRPC service and default port) and
//! which instance of it this process is.

/// The names a service is known by (a contract: docs/architecture.md, "Services").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// Consul service name and binary name, e.g. `users`.
    pub name: &'static str,
    /// Full gRPC service name, e.g. `mesh.users.v1.Users`.
    pub grpc_service: &'static str,
    /// Well-known port (users 50051 … orders 50054).
    pub default_port: u16,
}

impl ServiceIdentity {
    /// The protobuf package, e.g. `mesh.users.v1`.
    pub fn proto_package(&self) -> &'static str {
        self.grpc_service
            .rsplit_once('.')
            .map(|(package, _)| package)
            .unwrap_or(self.grpc_service)
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

    #[test]
    fn proto_package_is_the_service_name_without_its_last_part() {
        let identity = ServiceIdentity {
            name: "users",
            grpc_service: "mesh.users.v1.Users",
            default_port: 50051,
        };
        assert_eq!(identity.proto_package(), "mesh.users.v1");
    }

    #[test]
    fn instance_id_defaults_to_host_and_port() {
        assert_eq!(instance_id(Some("a1"), 1), "a1");
        assert!(instance_id(None, 50051).ends_with("-50051"));
        assert!(instance_id(Some(""), 7).ends_with("-7"));
    }
}
