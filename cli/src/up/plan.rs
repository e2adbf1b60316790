//! What `mesh up` runs: how many instances of each service, their ids and
//! their ports.

use std::{collections::BTreeMap, fmt, net::TcpListener, str::FromStr};

use anyhow::bail;
use mesh::service::ServiceIdentity;
use mesh_cli::services;

/// Instances per service unless `--instances` says otherwise.
pub(crate) const DEFAULT_INSTANCES: usize = 2;
/// Most instances of one service.
const MAX_INSTANCES: usize = 32;

/// `--instances`: `users=3,orders=1` (the others keep the default), or a bare
/// count for every service (`1`, or `1,users=3`). Names are those of
/// [`services::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstanceCounts {
    /// The count of every service not named.
    every: usize,
    /// Counts by service name.
    named: BTreeMap<String, usize>,
}

impl Default for InstanceCounts {
    fn default() -> Self {
        Self {
            every: DEFAULT_INSTANCES,
            named: BTreeMap::new(),
        }
    }
}

impl InstanceCounts {
    /// Instances of `service`.
    pub(crate) fn of(&self, service: &ServiceIdentity) -> usize {
        self.named.get(service.name).copied().unwrap_or(self.every)
    }
}

impl FromStr for InstanceCounts {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut counts = Self::default();
        let parse_count = |value: &str| -> Result<usize, String> {
            match value.trim().parse::<usize>() {
                Ok(count) if (1..=MAX_INSTANCES).contains(&count) => Ok(count),
                _ => Err(format!(
                    "{value:?} is not an instance count between 1 and {MAX_INSTANCES}"
                )),
            }
        };
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            match item.split_once('=') {
                None => {
                    counts.every = parse_count(item)?;
                    counts.named.clear();
                }
                Some((name, value)) => {
                    let name = name.trim();
                    if services::find(name).is_none() {
                        return Err(format!(
                            "unknown service {name:?} (known: {})",
                            services::names().join(", ")
                        ));
                    }
                    counts.named.insert(name.to_owned(), parse_count(value)?);
                }
            }
        }
        Ok(counts)
    }
}

impl fmt::Display for InstanceCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = services::identities()
            .map(|service| format!("{}={}", service.name, self.of(service)))
            .collect();
        f.write_str(&items.join(","))
    }
}

/// `--ports`: where the instances listen.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortMode {
    /// Instance 1 of each service on its well-known port (50051…50054,
    /// shifted by `--base-port`), the others on a free port.
    Fixed,
    /// Every instance on a free port (Consul has the real ones): nothing can
    /// collide with another mesh or a test running beside it.
    Dynamic,
}

/// One instance to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstancePlan {
    /// The service.
    pub(crate) service: ServiceIdentity,
    /// 1-based instance number.
    pub(crate) number: usize,
    /// The port to listen on (0: any free port).
    pub(crate) port: u16,
    /// `--version-meta` (`None`: the service's default, v1).
    pub(crate) version: Option<&'static str>,
}

impl InstancePlan {
    /// The value of `--instance-id`: the instance number (a service registers
    /// as `<service>-<instance id>`).
    pub(crate) fn instance_id(&self) -> String {
        self.number.to_string()
    }

    /// The Consul service ID, e.g. `payments-2` (also the log's name).
    pub(crate) fn id(&self) -> String {
        format!("{}-{}", self.service.name, self.number)
    }
}

/// Every instance of `services` to run, in their order.
///
/// With [`PortMode::Fixed`], instance 1 of each service listens on its
/// well-known port: the gRPC services' ports shifted by `base_port`'s offset
/// from the first of them (`--base-port 40000`: users 40000, inventory
/// 40001…), an edge's HTTP port (8080) as it is — it is not in that block.
pub(crate) fn instances<'a>(
    services: impl IntoIterator<Item = &'a ServiceIdentity>,
    counts: &InstanceCounts,
    mode: PortMode,
    base_port: u16,
) -> anyhow::Result<Vec<InstancePlan>> {
    let services: Vec<&ServiceIdentity> = services.into_iter().collect();
    let first_grpc_port = services
        .iter()
        .filter(|service| service.grpc_service().is_some())
        .map(|service| service.default_port)
        .min();
    let mut plan = Vec::new();
    for service in services {
        let fixed = match (mode, service.grpc_service(), first_grpc_port) {
            (PortMode::Dynamic, _, _) => None,
            (PortMode::Fixed, Some(_), Some(first)) => {
                let offset = service.default_port - first;
                let Some(port) = base_port.checked_add(offset).filter(|port| *port != 0) else {
                    bail!(
                        "--base-port {base_port} leaves no room for {}",
                        service.name
                    );
                };
                Some(port)
            }
            (PortMode::Fixed, _, _) => Some(service.default_port),
        };
        for number in 1..=counts.of(service) {
            let port = if number == 1 { fixed.unwrap_or(0) } else { 0 };
            plan.push(InstancePlan {
                service: *service,
                number,
                port,
                version: None,
            });
        }
    }
    Ok(plan)
}

/// Fails, naming them, when fixed ports are taken (another `mesh up`, the
/// compose stack…): better than instances crash-looping.
pub(crate) fn check_ports_free(plan: &[InstancePlan]) -> anyhow::Result<()> {
    let taken: Vec<String> = plan
        .iter()
        .filter(|instance| instance.port != 0)
        .filter(|instance| TcpListener::bind(("127.0.0.1", instance.port)).is_err())
        .map(|instance| format!("{} ({})", instance.port, instance.id()))
        .collect();
    if !taken.is_empty() {
        bail!(
            "port(s) in use on 127.0.0.1: {}. Is another mesh running? Stop it, or pick other \
             ports with --base-port, or --ports dynamic",
            taken.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mesh::service::ServiceKind;

    use super::*;

    /// A front door and an event consumer beside two of the real services:
    /// what the next kinds of service look like to the plan.
    const GATEWAY: ServiceIdentity = ServiceIdentity {
        name: "gateway",
        kind: ServiceKind::Edge,
        default_port: 8080,
    };
    const SHIPPING: ServiceIdentity = ServiceIdentity {
        name: "shipping",
        kind: ServiceKind::EventConsumer {
            grpc_service: "mesh.shipping.v1.Shipping",
        },
        default_port: 50055,
    };

    /// The four services of the shop as they are, whatever `ALL` grows into.
    fn shop() -> [ServiceIdentity; 4] {
        [
            users::IDENTITY,
            inventory::IDENTITY,
            payments::IDENTITY,
            orders::IDENTITY,
        ]
    }

    #[test]
    fn parses_instance_counts() {
        let (users, payments) = (users::IDENTITY, payments::IDENTITY);
        let (inventory, orders) = (inventory::IDENTITY, orders::IDENTITY);
        let counts: InstanceCounts = "users=3,orders=1".parse().unwrap();
        assert_eq!(counts.of(&users), 3);
        assert_eq!(counts.of(&orders), 1);
        assert_eq!(counts.of(&inventory), DEFAULT_INSTANCES);
        let counts: InstanceCounts = "1".parse().unwrap();
        assert!(shop().iter().all(|service| counts.of(service) == 1));
        let counts: InstanceCounts = "1, payments=4".parse().unwrap();
        assert_eq!(counts.of(&payments), 4);
        assert_eq!(counts.of(&users), 1);
        // Display lists every service of ALL, and reads back the same.
        assert!(counts.to_string().starts_with("users=1,inventory=1,"));
        assert_eq!(
            counts
                .to_string()
                .parse::<InstanceCounts>()
                .unwrap()
                .to_string(),
            counts.to_string()
        );
        assert_eq!(
            "".parse::<InstanceCounts>().unwrap(),
            InstanceCounts::default()
        );
        let unknown = "carts=1".parse::<InstanceCounts>().unwrap_err();
        assert!(
            unknown.contains(&format!("known: {}", services::names().join(", "))),
            "{unknown}"
        );
        assert!("users=0".parse::<InstanceCounts>().is_err());
        assert!("users=x".parse::<InstanceCounts>().is_err());
        assert!("users=33".parse::<InstanceCounts>().is_err());
    }

    #[test]
    fn every_service_of_the_list_is_planned_however_many_there_are() {
        let counts = InstanceCounts::default();
        let plan = instances(services::identities(), &counts, PortMode::Dynamic, 50051).unwrap();
        assert_eq!(plan.len(), services::ALL.len() * DEFAULT_INSTANCES);
        // A fifth and a sixth service need no change here.
        let more = [users::IDENTITY, SHIPPING, GATEWAY];
        let plan = instances(&more, &counts, PortMode::Fixed, 50051).unwrap();
        let ports: Vec<(String, u16)> = plan.iter().map(|i| (i.id(), i.port)).collect();
        assert_eq!(
            ports,
            [
                ("users-1".to_owned(), 50051),
                ("users-2".to_owned(), 0),
                ("shipping-1".to_owned(), 50055),
                ("shipping-2".to_owned(), 0),
                ("gateway-1".to_owned(), 8080),
                ("gateway-2".to_owned(), 0),
            ]
        );
    }

    #[test]
    fn fixed_ports_go_to_instance_one_shifted_by_the_base_port() {
        let counts: InstanceCounts = "1,users=2".parse().unwrap();
        let plan = instances(&shop(), &counts, PortMode::Fixed, 50051).unwrap();
        let ports: Vec<(String, u16)> = plan.iter().map(|i| (i.id(), i.port)).collect();
        assert_eq!(
            ports,
            [
                ("users-1".to_owned(), 50051),
                ("users-2".to_owned(), 0),
                ("inventory-1".to_owned(), 50052),
                ("payments-1".to_owned(), 50053),
                ("orders-1".to_owned(), 50054),
            ]
        );
        let shifted = instances(&shop(), &counts, PortMode::Fixed, 40000).unwrap();
        assert_eq!(shifted[0].port, 40000);
        assert_eq!(shifted[4].port, 40003);
        assert!(instances(&shop(), &counts, PortMode::Fixed, 65534).is_err());
        // The edge's HTTP port is not in the gRPC block: it stays.
        let edge = instances([&GATEWAY, &SHIPPING], &counts, PortMode::Fixed, 40000).unwrap();
        let ports: Vec<u16> = edge.iter().map(|i| i.port).collect();
        assert_eq!(ports, [8080, 40000]);
    }

    #[test]
    fn dynamic_ports_are_all_zero() {
        let plan = instances(
            &shop(),
            &InstanceCounts::default(),
            PortMode::Dynamic,
            50051,
        )
        .unwrap();
        assert_eq!(plan.len(), 8);
        assert!(plan.iter().all(|instance| instance.port == 0));
        assert_eq!(plan[1].instance_id(), "2");
        assert_eq!(plan[1].id(), "users-2");
    }
}
