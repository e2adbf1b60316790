//! The API the gateway exposes, read from descriptors: every method with a
//! `google.api.http` option (and nothing else), its HTTP bindings, its
//! access rules and the Consul service that serves it.
//!
//! - [`template`]: `google.api.http` path templates;
//! - [`rule`]: a method's options, checked against its messages;
//! - [`router`]: an HTTP method and path → the binding that serves them.
//!
//! The descriptors are the build's own (`mesh::proto::FILE_DESCRIPTOR_SET`),
//! plus any set given with `--descriptor-set`: an annotated RPC is exposed
//! with no gateway code change.

pub mod router;
pub mod rule;
pub mod template;

use std::{collections::HashMap, sync::Arc};

use prost_reflect::{DescriptorPool, MethodDescriptor};

pub use router::{RouteError, RouteMatch, Router};
pub use rule::{Access, Binding, BodyTarget};

/// Why the API could not be built from the descriptors.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A descriptor set could not be decoded or conflicts with another.
    #[error("invalid descriptor set: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    /// A method's `google.api.http` or access option is not usable.
    #[error("{method}: {reason}")]
    InvalidRule {
        /// The method's full name.
        method: String,
        /// What is wrong.
        reason: String,
    },
    /// Two bindings claim the same verb and path.
    #[error("{first} and {second} both bind {verb} {path}")]
    Conflict {
        /// One method.
        first: String,
        /// The other.
        second: String,
        /// The verb.
        verb: http::Method,
        /// The template.
        path: String,
    },
}

/// One exposed method.
#[derive(Debug, Clone)]
pub struct ExposedMethod {
    /// Its descriptor (request and response types).
    pub descriptor: MethodDescriptor,
    /// `/package.Service/Method`.
    pub grpc_path: String,
    /// The Consul service that serves it.
    pub upstream: String,
    /// Its HTTP bindings, the rule's first.
    pub bindings: Vec<Binding>,
    /// Who may call it.
    pub access: Access,
    /// The leading comment of the method in its `.proto` (OpenAPI descriptions).
    pub description: String,
}

/// The exposed API.
#[derive(Debug, Clone)]
pub struct Api {
    pool: DescriptorPool,
    methods: Vec<Arc<ExposedMethod>>,
    by_grpc_path: HashMap<String, Arc<ExposedMethod>>,
    router: Router,
}

impl Api {
    /// The build's descriptors plus `extra` encoded descriptor sets.
    pub fn load(extra: &[Vec<u8>]) -> Result<Self, ApiError> {
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(mesh::proto::FILE_DESCRIPTOR_SET)?;
        // google.rpc.Status and the error details, to print them as JSON.
        pool.decode_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)?;
        for set in extra {
            pool.decode_file_descriptor_set(set.as_slice())?;
        }
        Self::from_pool(pool)
    }

    /// Every annotated method of `pool`.
    pub fn from_pool(pool: DescriptorPool) -> Result<Self, ApiError> {
        let extensions = rule::Extensions::of(&pool);
        let mut methods = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                let Some(http) = extensions.http_rule(&method) else {
                    continue;
                };
                if method.is_client_streaming() || method.is_server_streaming() {
                    return Err(ApiError::InvalidRule {
                        method: method.full_name().to_owned(),
                        reason: "the gateway serves unary methods only".to_owned(),
                    });
                }
                let bindings = rule::bindings(&method, &http)?;
                let access = rule::access(&method, &extensions.access(&method))?;
                let upstream = upstream_service(service.package_name()).ok_or_else(|| {
                    ApiError::InvalidRule {
                        method: method.full_name().to_owned(),
                        reason: format!(
                            "cannot tell which Consul service serves package {:?}: it must be mesh.<service>.<version>",
                            service.package_name()
                        ),
                    }
                })?;
                methods.push(Arc::new(ExposedMethod {
                    grpc_path: format!("/{}/{}", service.full_name(), method.name()),
                    upstream,
                    bindings,
                    access,
                    description: comments(&method),
                    descriptor: method,
                }));
            }
        }
        methods.sort_by(|a, b| a.grpc_path.cmp(&b.grpc_path));
        let router = Router::new(&methods)?;
        let by_grpc_path = methods
            .iter()
            .map(|method| (method.grpc_path.clone(), method.clone()))
            .collect();
        Ok(Self {
            pool,
            methods,
            by_grpc_path,
            router,
        })
    }

    /// The descriptors (every message the API uses, and google.rpc's).
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Every exposed method, sorted by gRPC path.
    pub fn methods(&self) -> &[Arc<ExposedMethod>] {
        &self.methods
    }

    /// The exposed method at a gRPC path; `None` for anything not annotated.
    pub fn by_grpc_path(&self, path: &str) -> Option<&Arc<ExposedMethod>> {
        self.by_grpc_path.get(path)
    }

    /// The REST routes.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The Consul services the exposed methods call, each once.
    pub fn upstream_services(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .methods
            .iter()
            .map(|method| method.upstream.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// `mesh.<service>.<version>` → `<service>`: the Consul service name of a
/// package (the project's naming contract, docs/architecture.md).
fn upstream_service(package: &str) -> Option<String> {
    let mut parts = package.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("mesh"), Some(service), Some(_version), None) if !service.is_empty() => {
            Some(service.to_owned())
        }
        _ => None,
    }
}

/// The leading comment of a method in its `.proto` (empty when the
/// descriptors carry no source info).
fn comments(method: &MethodDescriptor) -> String {
    let file = method.parent_file();
    let Some(info) = file.file_descriptor_proto().source_code_info.as_ref() else {
        return String::new();
    };
    info.location
        .iter()
        .find(|location| location.path == method.path())
        .and_then(|location| location.leading_comments.as_deref())
        .map(|text| {
            text.lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_annotated_methods_of_the_build_are_exposed() {
        let api = Api::load(&[]).expect("the build's annotations are valid");
        let exposed: Vec<&str> = api.methods().iter().map(|m| m.grpc_path.as_str()).collect();
        assert_eq!(
            exposed,
            [
                "/mesh.inventory.v1.Inventory/GetItem",
                "/mesh.orders.v1.Orders/CancelOrder",
                "/mesh.orders.v1.Orders/GetOrder",
                "/mesh.orders.v1.Orders/ListOrders",
                "/mesh.orders.v1.Orders/PlaceOrder",
                "/mesh.shipping.v1.Shipping/GetShipment",
                "/mesh.shipping.v1.Shipping/ListShipments",
                "/mesh.users.v1.Users/CreateUser",
                "/mesh.users.v1.Users/GetUser",
            ]
        );
        for internal in [
            "/mesh.inventory.v1.Inventory/Reserve",
            "/mesh.inventory.v1.Inventory/Commit",
            "/mesh.inventory.v1.Inventory/Restock",
            "/mesh.inventory.v1.Inventory/AddStock",
            "/mesh.payments.v1.Payments/Charge",
            "/mesh.payments.v1.Payments/Refund",
            "/mesh.payments.v1.Payments/GetPayment",
            "/mesh.shipping.v1.Shipping/MarkShipped",
            "/mesh.users.v1.Users/ListUsers",
        ] {
            assert!(
                api.by_grpc_path(internal).is_none(),
                "{internal} is exposed"
            );
        }
        let place = api
            .by_grpc_path("/mesh.orders.v1.Orders/PlaceOrder")
            .unwrap();
        assert_eq!(place.upstream, "orders");
        assert!(!place.access.public);
        assert_eq!(
            place.access.subject_field.as_ref().unwrap()[0].name(),
            "user_id"
        );
        assert!(
            place.description.starts_with("Places an order"),
            "{}",
            place.description
        );
        let list = api
            .by_grpc_path("/mesh.orders.v1.Orders/ListOrders")
            .unwrap();
        assert_eq!(
            list.bindings.len(),
            2,
            "the rule and its additional binding"
        );
        assert!(
            api.by_grpc_path("/mesh.users.v1.Users/CreateUser")
                .unwrap()
                .access
                .public
        );
    }

    #[test]
    fn packages_name_their_consul_service() {
        assert_eq!(
            upstream_service("mesh.orders.v1").as_deref(),
            Some("orders")
        );
        assert_eq!(upstream_service("acme.orders.v1"), None);
        assert_eq!(upstream_service("mesh.orders"), None);
        assert_eq!(upstream_service("mesh.a.b.c"), None);
    }
}
