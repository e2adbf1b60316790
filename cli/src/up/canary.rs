//! `mesh up --canary`: one more `inventory` instance, registered with
//! `Meta.version = v2` (the others are `v1`), and the traffic config entries
//! of `deploy/consul/config/` written before any instance starts, so that
//! every call meets the chain from the first one: all of inventory's traffic
//! on v1 (split 100/0), calls with `x-canary: 1` on v2.

use discovery::{ConsulConfig, ConsulHttp};

use super::plan::InstancePlan;

/// `--canary`.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct CanaryArgs {
    /// Also run an inventory canary: one more instance with `Meta.version`
    /// v2, and write the config entries of deploy/consul/config
    /// (service-defaults grpc for every service; inventory's resolver with
    /// subsets v1/v2, splitter at 100/0, router sending `x-canary: 1` to v2).
    #[arg(long)]
    pub(crate) canary: bool,
}

/// The version the canary registers.
pub(crate) const CANARY_VERSION: &str = "v2";

/// `plan` with the canary instance added (after inventory's own).
pub(crate) fn extend(mut plan: Vec<InstancePlan>, args: &CanaryArgs) -> Vec<InstancePlan> {
    if !args.canary {
        return plan;
    }
    let inventory = inventory::IDENTITY;
    let number = plan
        .iter()
        .filter(|instance| instance.service == inventory)
        .count()
        + 1;
    let position = plan
        .iter()
        .rposition(|instance| instance.service == inventory)
        .map_or(plan.len(), |last| last + 1);
    plan.insert(
        position,
        InstancePlan {
            service: inventory,
            number,
            port: 0,
            version: Some(CANARY_VERSION),
        },
    );
    plan
}

/// Writes the config entries (with `mesh up`'s own token).
pub(crate) async fn write_config(consul: &ConsulConfig) -> anyhow::Result<String> {
    mesh_cli::traffic_config::write_all(&ConsulHttp::new(consul)).await?;
    let files: Vec<&str> = mesh_cli::traffic_config::ENTRIES
        .iter()
        .map(|(file, _)| *file)
        .collect();
    Ok(format!(
        "consul: traffic config entries written from deploy/consul/config: {}",
        files.join(", ")
    ))
}

/// What the banner adds: where the canary is and what to try.
pub(crate) fn banner(plan: &[InstancePlan]) -> String {
    let canary = plan
        .iter()
        .find(|instance| instance.version == Some(CANARY_VERSION))
        .map_or_else(String::new, InstancePlan::id);
    format!(
        "Canary: {canary} is inventory version {CANARY_VERSION}; the others are v1. Inventory's calls\n\
         go 100/0 to v1; a call with `x-canary: 1` goes to v2. See it, then shift it:\n  \
         mesh chain inventory --method /mesh.inventory.v1.Inventory/GetItem -H x-canary=1\n  \
         consul config write deploy/consul/config/splits/inventory-90-10.json\n  \
         mesh-bench load --rpc get-item --requests 10000   (per-subset counts at the end)\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::up::plan::{instances, InstanceCounts, PortMode};

    #[test]
    fn adds_one_v2_inventory_instance_after_the_others() {
        let counts: InstanceCounts = "1,inventory=2".parse().unwrap();
        let plan = instances(
            mesh_cli::services::identities(),
            &counts,
            PortMode::Dynamic,
            50051,
        )
        .unwrap();
        let unchanged = extend(plan.clone(), &CanaryArgs::default());
        assert_eq!(unchanged, plan);
        let with_canary = extend(plan, &CanaryArgs { canary: true });
        let ids: Vec<String> = with_canary.iter().map(InstancePlan::id).collect();
        assert_eq!(
            ids,
            [
                "users-1",
                "inventory-1",
                "inventory-2",
                "inventory-3",
                "payments-1",
                "orders-1",
                "shipping-1",
                "gateway-1"
            ]
        );
        assert_eq!(with_canary[3].version, Some("v2"));
        assert!(with_canary.iter().filter(|i| i.version.is_some()).count() == 1);
        assert!(banner(&with_canary).contains("inventory-3 is inventory version v2"));
    }
}
