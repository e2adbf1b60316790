//! The services of the mesh, listed once: every tool and check that needs
//! "each service" starts from [`ALL`] — `mesh up` (what it runs, waits for
//! and prints), `mesh serve <name>`, `mesh status`' order, the CLI's tests, and
//! the test that checks every file naming the services against it
//! (`cli/tests/service_lists.rs`). Each entry is the service crate's own
//! `SERVICE` (its `IDENTITY` and how it runs): nothing restated here.

use mesh::{server::Runnable, service::ServiceIdentity};

/// Every service, in start order (callers after what they call).
pub const ALL: &[Runnable] = &[
    users::SERVICE,
    inventory::SERVICE,
    payments::SERVICE,
    orders::SERVICE,
    shipping::SERVICE,
    gateway::SERVICE,
];

/// Every service's identity, in start order.
pub fn identities() -> impl Iterator<Item = &'static ServiceIdentity> {
    ALL.iter().map(|service| service.identity)
}

/// The service called `name`.
pub fn find(name: &str) -> Option<&'static Runnable> {
    ALL.iter().find(|service| service.identity.name == name)
}

/// Every service's name, in start order.
pub fn names() -> Vec<&'static str> {
    identities().map(|identity| identity.name).collect()
}

/// The lowest well-known gRPC port (users' 50051): `mesh up --base-port`
/// shifts the gRPC services' ports relative to it.
pub fn first_grpc_port() -> u16 {
    identities()
        .filter(|identity| identity.grpc_service().is_some())
        .map(|identity| identity.default_port)
        .min()
        .unwrap_or(50051)
}
