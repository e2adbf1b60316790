//! The ACL policies the mesh ships (`deploy/consul/acl/*.hcl`, compiled in so
//! that `mesh acl bootstrap` needs no checkout) and the token each holder gets.

/// One Consul ACL policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The policy's name in Consul (`mesh-users`…).
    pub(crate) name: &'static str,
    /// Its file in `deploy/consul/acl/` (and in `--policies-dir`).
    pub(crate) file: &'static str,
    /// Shown in the UI.
    pub(crate) description: &'static str,
    /// HCL rules.
    pub(crate) rules: &'static str,
}

/// One token to create, and the policy it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenSpec {
    /// `users`, `mesh-read`, `agent`…: the token file is `<name>.token`.
    pub(crate) name: &'static str,
    /// The policy it carries.
    pub(crate) policy: &'static str,
}

impl TokenSpec {
    /// The token's description in Consul, by which it is found again.
    pub(crate) fn description(&self) -> String {
        format!("mesh token: {}", self.name)
    }
}

/// Every policy, from the files in `deploy/consul/acl/`.
pub(crate) const POLICIES: [Policy; 7] = [
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
            "orders: service:write on itself, service:read on users, inventory, payments, node:read",
        rules: include_str!("../../../deploy/consul/acl/orders.hcl"),
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

/// Every token: one per service, the read-only one, the agent's, the
/// traffic operator's.
pub(crate) const TOKENS: [TokenSpec; 7] = [
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
    fn every_service_has_a_policy_that_writes_itself_only() {
        for service in crate::services::ALL {
            let token = TOKENS
                .iter()
                .find(|token| token.name == service.name)
                .expect("a token per service");
            let policy = POLICIES
                .iter()
                .find(|policy| policy.name == token.policy)
                .expect("its policy");
            let own = format!("service \"{}\" {{\n  policy     = \"write\"", service.name);
            assert!(policy.rules.contains(&own), "{}", policy.rules);
            assert_eq!(
                policy.rules.matches("\"write\"").count(),
                1,
                "{} writes only itself",
                policy.name
            );
            assert!(policy
                .rules
                .contains("node_prefix \"\" {\n  policy = \"read\""));
        }
        for token in TOKENS {
            assert!(POLICIES.iter().any(|policy| policy.name == token.policy));
        }
    }

    #[test]
    fn the_traffic_policy_writes_the_services_config_entries_and_nothing_else() {
        let traffic = POLICIES
            .iter()
            .find(|policy| policy.name == "mesh-traffic")
            .expect("the traffic policy");
        let rules: Vec<&str> = traffic
            .rules
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .collect();
        let rules = rules.join("\n");
        for service in crate::services::ALL {
            let rule = format!("service \"{}\" {{\n  policy = \"write\"", service.name);
            assert!(rules.contains(&rule), "{rules}");
        }
        assert_eq!(
            rules.matches("\"write\"").count(),
            crate::services::ALL.len(),
            "writes the four services only"
        );
        for broader in ["service_prefix", "operator", "acl", "agent", "key"] {
            assert!(!rules.contains(broader), "{broader} in {rules}");
        }
    }
}
