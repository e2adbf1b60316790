//! What `mesh up` runs: how many instances of each service, their ids and
//! their ports.

use std::{fmt, net::TcpListener, str::FromStr};

use anyhow::bail;

use crate::services::{self, Service};

/// Instances per service unless `--instances` says otherwise.
pub(crate) const DEFAULT_INSTANCES: usize = 2;
/// Most instances of one service.
const MAX_INSTANCES: usize = 32;

/// `--instances`: `users=3,orders=1` (the others keep the default), or a bare
/// count for every service (`1`, or `1,users=3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstanceCounts([usize; services::ALL.len()]);

impl Default for InstanceCounts {
    fn default() -> Self {
        Self([DEFAULT_INSTANCES; services::ALL.len()])
    }
}

impl InstanceCounts {
    /// Instances of `service`.
    pub(crate) fn of(&self, service: &Service) -> usize {
        services::ALL
            .iter()
            .position(|known| known == service)
            .map_or(0, |index| self.0[index])
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
                None => counts.0 = [parse_count(item)?; services::ALL.len()],
                Some((name, value)) => {
                    let index = services::ALL
                        .iter()
                        .position(|service| service.name == name.trim())
                        .ok_or_else(|| {
                            format!(
                                "unknown service {name:?} (known: users, inventory, payments, orders)"
                            )
                        })?;
                    counts.0[index] = parse_count(value)?;
                }
            }
        }
        Ok(counts)
    }
}

impl fmt::Display for InstanceCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = services::ALL
            .iter()
            .zip(self.0)
            .map(|(service, count)| format!("{}={count}", service.name))
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
    pub(crate) service: Service,
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

/// Every instance to run, services in start order.
pub(crate) fn instances(
    counts: &InstanceCounts,
    mode: PortMode,
    base_port: u16,
) -> anyhow::Result<Vec<InstancePlan>> {
    let mut plan = Vec::new();
    for service in services::ALL {
        let fixed = match mode {
            PortMode::Fixed => {
                let offset = service.default_port - services::FIRST_PORT;
                let Some(port) = base_port.checked_add(offset).filter(|port| *port != 0) else {
                    bail!(
                        "--base-port {base_port} leaves no room for {}",
                        service.name
                    );
                };
                Some(port)
            }
            PortMode::Dynamic => None,
        };
        for number in 1..=counts.of(&service) {
            let port = if number == 1 { fixed.unwrap_or(0) } else { 0 };
            plan.push(InstancePlan {
                service,
                number,
                port,
                version: None,
            });
        }
    }
    Ok(plan)
}

/// Fails, naming them, when fixed ports are taken (another `mesh up`, the
/// compose stack…): better than four instances crash-looping.
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
    use super::*;

    #[test]
    fn parses_instance_counts() {
        let counts: InstanceCounts = "users=3,orders=1".parse().unwrap();
        assert_eq!(
            counts.to_string(),
            "users=3,inventory=2,payments=2,orders=1,shipping=2"
        );
        let counts: InstanceCounts = "1".parse().unwrap();
        assert_eq!(
            counts.to_string(),
            "users=1,inventory=1,payments=1,orders=1,shipping=1"
        );
        let counts: InstanceCounts = "1, payments=4".parse().unwrap();
        assert_eq!(
            counts.to_string(),
            "users=1,inventory=1,payments=4,orders=1,shipping=1"
        );
        assert_eq!(
            "".parse::<InstanceCounts>().unwrap(),
            InstanceCounts::default()
        );
        assert!("carts=1".parse::<InstanceCounts>().is_err());
        assert!("users=0".parse::<InstanceCounts>().is_err());
        assert!("users=x".parse::<InstanceCounts>().is_err());
        assert!("users=33".parse::<InstanceCounts>().is_err());
    }

    #[test]
    fn fixed_ports_go_to_instance_one_shifted_by_the_base_port() {
        let counts: InstanceCounts = "users=2,inventory=1,payments=1,orders=1,shipping=1"
            .parse()
            .unwrap();
        let plan = instances(&counts, PortMode::Fixed, 50051).unwrap();
        let ports: Vec<(String, u16)> = plan.iter().map(|i| (i.id(), i.port)).collect();
        assert_eq!(
            ports,
            [
                ("users-1".to_owned(), 50051),
                ("users-2".to_owned(), 0),
                ("inventory-1".to_owned(), 50052),
                ("payments-1".to_owned(), 50053),
                ("orders-1".to_owned(), 50054),
                ("shipping-1".to_owned(), 50055),
            ]
        );
        let shifted = instances(&counts, PortMode::Fixed, 40000).unwrap();
        assert_eq!(shifted[0].port, 40000);
        assert_eq!(shifted[4].port, 40003);
        assert!(instances(&counts, PortMode::Fixed, 65534).is_err());
    }

    #[test]
    fn dynamic_ports_are_all_zero() {
        let plan = instances(&InstanceCounts::default(), PortMode::Dynamic, 50051).unwrap();
        assert_eq!(plan.len(), 10);
        assert!(plan.iter().all(|instance| instance.port == 0));
        assert_eq!(plan[1].instance_id(), "2");
        assert_eq!(plan[1].id(), "users-2");
    }
}
