//! The mesh's four services as the CLI knows them (DESIGN §2, a contract).

/// One service: its Consul name (also the `mesh serve` argument), its gRPC
/// service and its well-known port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Service {
    /// Consul service name, e.g. `users`.
    pub(crate) name: &'static str,
    /// Full gRPC service name, e.g. `mesh.users.v1.Users`.
    pub(crate) grpc_service: &'static str,
    /// Well-known port (users 50051 … orders 50054).
    pub(crate) port: u16,
}

/// Every service, in start order (orders, the caller of the others, last).
pub(crate) const ALL: [Service; 4] = [
    Service {
        name: "users",
        grpc_service: "mesh.users.v1.Users",
        port: 50051,
    },
    Service {
        name: "inventory",
        grpc_service: "mesh.inventory.v1.Inventory",
        port: 50052,
    },
    Service {
        name: "payments",
        grpc_service: "mesh.payments.v1.Payments",
        port: 50053,
    },
    Service {
        name: "orders",
        grpc_service: "mesh.orders.v1.Orders",
        port: 50054,
    },
];

/// The lowest well-known port: `--base-port` shifts all four relative to it.
pub(crate) const FIRST_PORT: u16 = 50051;

/// The service named `name`.
#[cfg(test)]
pub(crate) fn by_name(name: &str) -> Option<Service> {
    ALL.into_iter().find(|service| service.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_the_services_own_identities() {
        for identity in [
            users::IDENTITY,
            inventory::IDENTITY,
            payments::IDENTITY,
            orders::IDENTITY,
        ] {
            let service = by_name(identity.name).expect("known service");
            assert_eq!(service.grpc_service, identity.grpc_service);
            assert_eq!(service.port, identity.default_port);
        }
        assert_eq!(by_name("nope"), None);
    }
}
