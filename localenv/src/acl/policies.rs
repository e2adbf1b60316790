//! The ACL policies the mesh ships (`deploy/consul/acl/*.hcl`, compiled in so
//! that `mesh acl bootstrap` and the local agent need no checkout) and the
//! token each holder gets.

/// One Consul ACL policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The policy's name in Consul (`mesh-users`…).
    pub name: &'static str,
    /// Its file in `deploy/consul/acl/` (and in `--policies-dir`).
    pub file: &'static str,
    /// Shown in the UI.
    pub description: &'static str,
    /// HCL rules.
    pub rules: &'static str,
}

/// One token to create, and the policy it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSpec {
    /// `users`, `mesh-read`, `agent`…: the token file is `<name>.token`.
    pub name: &'static str,
    /// The policy it carries.
    pub policy: &'static str,
}

impl TokenSpec {
    /// The token's description in Consul, by which it is found again.
    pub fn description(&self) -> String {
        format!("mesh token: {}", self.name)
    }
}

/// Every policy, from the files in `deploy/consul/acl/`.
pub const POLICIES: [Policy; 9] = [
    Policy {
        name: "mesh-users",
        file: "users.hcl",
        description: "users: service:write on itself, node:read",
        rules: include_str!("../../../deploy/consul/acl/users.hcl"),
    },
    Policy {
        name: "mesh-inventory",
        file: "inventory.hcl",
        description: "inventory: service:write on itself, node:read",
        rules: include_str!("../../../deploy/consul/acl/inventory.hcl"),
    },
    Policy {
        name: "mesh-payments",
        file: "payments.hcl",
        description: "payments: service:write on itself, node:read",
        rules: include_str!("../../../deploy/consul/acl/payments.hcl"),
    },
    Policy {
        name: "mesh-orders",
        file: "orders.hcl",
        description:
            "orders: service:write on itself, service:read on users, inventory, payments, mesh-broker, node:read",
        rules: include_str!("../../../deploy/consul/acl/orders.hcl"),
    },
    Policy {
        name: "mesh-shipping",
        file: "shipping.hcl",
        description: "shipping: service:write on itself, service:read on mesh-broker, node:read",
        rules: include_str!("../../../deploy/consul/acl/shipping.hcl"),
    },
    Policy {
        name: "mesh-gateway",
        file: "gateway.hcl",
        description:
            "gateway: service:write on itself, service:read on users, inventory, orders, shipping, node:read",
        rules: include_str!("../../../deploy/consul/acl/gateway.hcl"),
    },
    Policy {
        name: "mesh-read",
        file: "mesh-read.hcl",
        description: "read-only view of the mesh: mesh status, the UI",
        rules: include_str!("../../../deploy/consul/acl/mesh-read.hcl"),
    },
    Policy {
        name: "mesh-agent",
        file: "mesh-agent.hcl",
        description: "the Consul agent's own token: node:write",
        rules: include_str!("../../../deploy/consul/acl/mesh-agent.hcl"),
    },
    Policy {
        name: "mesh-traffic",
        file: "mesh-traffic.hcl",
        description: "traffic management: write the services' config entries (consul config write)",
        rules: include_str!("../../../deploy/consul/acl/mesh-traffic.hcl"),
    },
];

/// Every token: one per service (the gateway's too), the read-only one, the agent's, the
/// traffic operator's.
pub const TOKENS: [TokenSpec; 9] = [
    TokenSpec {
        name: "users",
        policy: "mesh-users",
    },
    TokenSpec {
        name: "inventory",
        policy: "mesh-inventory",
    },
    TokenSpec {
        name: "payments",
        policy: "mesh-payments",
    },
    TokenSpec {
        name: "orders",
        policy: "mesh-orders",
    },
    TokenSpec {
        name: "shipping",
        policy: "mesh-shipping",
    },
    TokenSpec {
        name: "gateway",
        policy: "mesh-gateway",
    },
    TokenSpec {
        name: "mesh-read",
        policy: "mesh-read",
    },
    TokenSpec {
        name: "agent",
        policy: "mesh-agent",
    },
    TokenSpec {
        name: "traffic",
        policy: "mesh-traffic",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_carries_a_shipped_policy_and_every_policy_is_used() {
        for token in TOKENS {
            assert!(
                POLICIES.iter().any(|policy| policy.name == token.policy),
                "{token:?}"
            );
        }
        for policy in POLICIES {
            assert!(
                TOKENS.iter().any(|token| token.policy == policy.name),
                "{policy:?}"
            );
            assert!(policy.rules.contains("node_prefix"), "{}", policy.file);
        }
    }

    #[test]
    fn the_gateway_may_resolve_users_inventory_orders_and_shipping_but_never_payments() {
        let gateway = POLICIES
            .iter()
            .find(|policy| policy.name == "mesh-gateway")
            .expect("the gateway's policy");
        for service in ["users", "inventory", "orders", "shipping"] {
            let rule = format!("service \"{service}\" {{\n  policy = \"read\"");
            assert!(gateway.rules.contains(&rule), "{}", gateway.rules);
        }
        assert!(
            !gateway.rules.contains("\"payments\""),
            "the gateway never calls payments: it may not even resolve it"
        );
    }
}
