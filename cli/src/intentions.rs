//! The intentions the project ships for the shop's call graph: default-deny,
//! `orders` may call `users`, `inventory` and `payments`, the API `gateway`
//! may call `users`, `inventory`, `orders` and `shipping` (whose read RPCs it
//! exposes to a shipment's owner) — and is denied `payments` by
//! name, so that no wildcard allow added later reaches it — and the
//! `operator` identity (grpcurl, `mesh bench`, demo seeding) may call every
//! service. Nothing else calls `payments` or `inventory`. The Kubernetes manifests
//! carry the same list (`k8s/base/consul/mesh-connect.json`, `service-intentions` config entries).

use anyhow::Context as _;
use discovery::connect::{ConnectCa, Intention, IntentionAction};

/// `(source, destination, action)`, most specific first (Consul picks the
/// most specific match whatever the order).
pub(crate) const DEFAULT_INTENTIONS: &[(&str, &str, IntentionAction)] = &[
    ("orders", "users", IntentionAction::Allow),
    ("orders", "inventory", IntentionAction::Allow),
    ("orders", "payments", IntentionAction::Allow),
    ("gateway", "users", IntentionAction::Allow),
    ("gateway", "inventory", IntentionAction::Allow),
    ("gateway", "orders", IntentionAction::Allow),
    ("gateway", "shipping", IntentionAction::Allow),
    ("gateway", "payments", IntentionAction::Deny),
    (mesh::connect::OPERATOR, "*", IntentionAction::Allow),
    ("*", "*", IntentionAction::Deny),
];

const DESCRIPTION: &str = "mesh: the shop's call graph (default-deny)";

/// Creates (or updates) every default intention.
pub(crate) async fn apply(ca: &ConnectCa) -> anyhow::Result<()> {
    for (source, destination, action) in DEFAULT_INTENTIONS {
        ca.set_intention(&Intention::new(source, destination, *action, DESCRIPTION))
            .await
            .with_context(|| {
                format!("cannot set the intention {source} → {destination}: {action}")
            })?;
    }
    Ok(())
}

/// One line per intention: `orders → users: allow`.
pub(crate) fn describe() -> Vec<String> {
    DEFAULT_INTENTIONS
        .iter()
        .map(|(source, destination, action)| format!("{source} → {destination}: {action}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_graph_is_default_deny_and_only_orders_reaches_payments() {
        assert!(DEFAULT_INTENTIONS.contains(&("*", "*", IntentionAction::Deny)));
        let callers_of = |target: &str| -> Vec<&str> {
            DEFAULT_INTENTIONS
                .iter()
                .filter(|(_, destination, action)| {
                    *action == IntentionAction::Allow
                        && (*destination == target || *destination == "*")
                })
                .map(|(source, _, _)| *source)
                .collect()
        };
        assert_eq!(callers_of("payments"), ["orders", "operator"]);
        assert_eq!(callers_of("inventory"), ["orders", "gateway", "operator"]);
        assert_eq!(callers_of("orders"), ["gateway", "operator"]);
        assert_eq!(callers_of("shipping"), ["gateway", "operator"]);
        assert!(!callers_of("payments").contains(&"users"));
        assert!(DEFAULT_INTENTIONS.contains(&("gateway", "payments", IntentionAction::Deny)));
    }
}
