//! The mesh's five services as the CLI knows them: each service crate's own
//! `IDENTITY` (a contract: docs/architecture.md, "Services"), nothing
//! restated here.

pub(crate) use mesh::service::ServiceIdentity as Service;

/// Every service, in start order (orders, the caller of the others, after
/// them; shipping, which consumes orders' events and calls no one, last).
pub(crate) const ALL: [Service; 5] = [
    users::IDENTITY,
    inventory::IDENTITY,
    payments::IDENTITY,
    orders::IDENTITY,
    shipping::IDENTITY,
];

/// The lowest well-known port: `--base-port` shifts all of them relative to it.
pub(crate) const FIRST_PORT: u16 = ALL[0].default_port;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_consecutive_from_the_first_so_base_port_can_shift_them() {
        for (offset, service) in ALL.iter().enumerate() {
            assert_eq!(usize::from(service.default_port - FIRST_PORT), offset);
        }
    }

    /// The tables a person or a script reads, checked against the identities.
    #[test]
    fn the_readme_architecture_and_kubernetes_tables_match_the_identities() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace root");
        let read = |path: &str| {
            std::fs::read_to_string(root.join(path))
                .unwrap_or_else(|error| panic!("{path}: {error}"))
        };
        let (readme, architecture, k8s) = (
            read("README.md"),
            read("docs/architecture.md"),
            read("scripts/k8s_properties.py"),
        );
        for service in ALL {
            let row = format!(
                "| `{}` | `{}` | {} |",
                service.name, service.grpc_service, service.default_port
            );
            assert!(readme.contains(&row), "README.md lacks the row {row}");
            assert!(
                architecture.contains(&row),
                "docs/architecture.md lacks the row {row}"
            );
            let entry = format!(
                "\"{}\": ({}, \"{}\"),",
                service.name, service.default_port, service.grpc_service
            );
            assert!(
                k8s.contains(&entry),
                "scripts/k8s_properties.py lacks {entry}"
            );
        }
    }
}
