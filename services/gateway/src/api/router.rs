//! The REST routes: an HTTP method and a raw path → the exposed method and
//! binding that serve them, with the path variables' values. A path that
//! some binding matches with another verb is 405 (with the allowed verbs);
//! one no binding matches is 404.

use std::sync::Arc;

use super::{template::Bindings, ApiError, Binding, ExposedMethod};

/// One route: a binding of an exposed method.
#[derive(Debug, Clone)]
struct Route {
    method: Arc<ExposedMethod>,
    binding: usize,
}

impl Route {
    fn binding(&self) -> &Binding {
        &self.method.bindings[self.binding]
    }
}

/// The routes, most specific first.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// A matched route.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The method to call.
    pub method: Arc<ExposedMethod>,
    /// Which of its bindings matched.
    pub binding: usize,
    /// The path variables' values (field path, decoded value).
    pub path_values: Bindings,
}

impl RouteMatch {
    /// The matched binding.
    pub fn binding(&self) -> &Binding {
        &self.method.bindings[self.binding]
    }
}

/// Why no route serves a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No binding matches the path.
    NotFound,
    /// Bindings match the path, with other verbs (listed).
    MethodNotAllowed(Vec<http::Method>),
}

impl Router {
    /// The routes of `methods`; two bindings with the same verb and the same
    /// template are a conflict.
    pub(crate) fn new(methods: &[Arc<ExposedMethod>]) -> Result<Self, ApiError> {
        let mut routes: Vec<Route> = Vec::new();
        for method in methods {
            for (index, binding) in method.bindings.iter().enumerate() {
                if let Some(existing) = routes.iter().find(|route| {
                    route.binding().verb == binding.verb
                        && route.binding().template.segments == binding.template.segments
                        && route.binding().template.verb == binding.template.verb
                }) {
                    return Err(ApiError::Conflict {
                        first: existing.method.descriptor.full_name().to_owned(),
                        second: method.descriptor.full_name().to_owned(),
                        verb: binding.verb.clone(),
                        path: binding.template.text.clone(),
                    });
                }
                routes.push(Route {
                    method: method.clone(),
                    binding: index,
                });
            }
        }
        // Stable: equally specific routes keep the methods' order.
        routes.sort_by_key(|route| std::cmp::Reverse(route.binding().template.specificity()));
        Ok(Self { routes })
    }

    /// The route for `verb` and the raw `path` (no query).
    pub fn route(&self, verb: &http::Method, path: &str) -> Result<RouteMatch, RouteError> {
        let mut allowed: Vec<http::Method> = Vec::new();
        for route in &self.routes {
            let Some(path_values) = route.binding().template.matches(path) else {
                continue;
            };
            if route.binding().verb == *verb {
                return Ok(RouteMatch {
                    method: route.method.clone(),
                    binding: route.binding,
                    path_values,
                });
            }
            if !allowed.contains(&route.binding().verb) {
                allowed.push(route.binding().verb.clone());
            }
        }
        if allowed.is_empty() {
            Err(RouteError::NotFound)
        } else {
            Err(RouteError::MethodNotAllowed(allowed))
        }
    }

    /// Every (verb, template text, method) — the OpenAPI paths, the docs.
    pub fn describe(&self) -> Vec<(http::Method, String, Arc<ExposedMethod>)> {
        self.routes
            .iter()
            .map(|route| {
                (
                    route.binding().verb.clone(),
                    route.binding().template.text.clone(),
                    route.method.clone(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::api::Api;

    fn api() -> Api {
        Api::load(&[]).expect("the build's API")
    }

    fn route(verb: Method, path: &str) -> Result<(String, Vec<(String, String)>), RouteError> {
        api().router().route(&verb, path).map(|found| {
            (
                found.method.grpc_path.clone(),
                found
                    .path_values
                    .into_iter()
                    .map(|(field, value)| (field.join("."), value))
                    .collect(),
            )
        })
    }

    #[test]
    fn routes_the_shops_paths() {
        assert_eq!(
            route(Method::GET, "/v1/items/WIDGET-1").unwrap(),
            (
                "/mesh.inventory.v1.Inventory/GetItem".to_owned(),
                vec![("sku".to_owned(), "WIDGET-1".to_owned())]
            )
        );
        assert_eq!(
            route(Method::POST, "/v1/orders/ord_1:cancel").unwrap().0,
            "/mesh.orders.v1.Orders/CancelOrder"
        );
        assert_eq!(
            route(Method::GET, "/v1/orders/ord_1").unwrap().0,
            "/mesh.orders.v1.Orders/GetOrder"
        );
        assert_eq!(
            route(Method::GET, "/v1/users/u_1/orders").unwrap(),
            (
                "/mesh.orders.v1.Orders/ListOrders".to_owned(),
                vec![("user_id".to_owned(), "u_1".to_owned())]
            )
        );
        // The additional binding.
        assert_eq!(
            route(Method::GET, "/v1/orders").unwrap().0,
            "/mesh.orders.v1.Orders/ListOrders"
        );
        assert_eq!(
            route(Method::POST, "/v1/orders").unwrap().0,
            "/mesh.orders.v1.Orders/PlaceOrder"
        );
    }

    #[test]
    fn unknown_paths_are_404_and_other_verbs_405() {
        assert_eq!(
            route(Method::GET, "/v1/payments/p_1"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route(Method::POST, "/mesh.payments.v1.Payments/Charge"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route(Method::DELETE, "/v1/items/WIDGET-1"),
            Err(RouteError::MethodNotAllowed(vec![Method::GET]))
        );
        match route(Method::PUT, "/v1/orders") {
            Err(RouteError::MethodNotAllowed(mut allowed)) => {
                allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                assert_eq!(allowed, [Method::GET, Method::POST]);
            }
            other => panic!("{other:?}"),
        }
    }
}
