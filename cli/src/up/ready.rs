//! Waiting until Consul reports every planned instance passing.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use super::{console::Spinner, plan::InstancePlan};
use mesh_cli::services;

use crate::{consul::model::HealthEntry, consul::ConsulApi};

/// How often Consul is asked.
const POLL: Duration = Duration::from_millis(300);

/// Some instances did not pass in time.
#[derive(Debug, thiserror::Error)]
#[error("not passing in Consul after {timeout:?}: {}", missing.join(", "))]
pub(crate) struct NotReady {
    /// How long we waited.
    pub(crate) timeout: Duration,
    /// Their service IDs.
    pub(crate) missing: Vec<String>,
}

/// Polls `/v1/health/service/<service>?passing` until every instance of
/// `plan` is listed; returns them by service ID. Fails after `timeout`
/// naming the instances still missing.
pub(crate) async fn wait_passing(
    api: &ConsulApi,
    plan: &[InstancePlan],
    timeout: Duration,
) -> Result<BTreeMap<String, HealthEntry>, NotReady> {
    let expected: BTreeSet<String> = plan.iter().map(InstancePlan::id).collect();
    let spinner = Spinner::start("waiting for every instance to pass its Consul check");
    let deadline = Instant::now() + timeout;
    loop {
        let mut passing = BTreeMap::new();
        let mut last_error = None;
        for service in services::identities() {
            if !plan.iter().any(|instance| instance.service == *service) {
                continue;
            }
            match api.health(service.name, true).await {
                Ok(entries) => passing.extend(
                    entries
                        .into_iter()
                        .filter(|entry| expected.contains(&entry.service.id))
                        .map(|entry| (entry.service.id.clone(), entry)),
                ),
                Err(error) => last_error = Some(error.to_string()),
            }
        }
        if passing.len() == expected.len() {
            return Ok(passing);
        }
        let progress: Vec<String> = services::identities()
            .filter_map(|service| {
                let planned = plan.iter().filter(|i| i.service == *service).count();
                (planned > 0).then(|| {
                    let up = passing
                        .values()
                        .filter(|e| e.service.service == service.name)
                        .count();
                    format!("{} {up}/{planned}", service.name)
                })
            })
            .collect();
        spinner.set_message(format!(
            "waiting for Consul checks to pass: {}{}",
            progress.join(", "),
            last_error
                .map(|error| format!(" ({error})"))
                .unwrap_or_default()
        ));
        if Instant::now() >= deadline {
            let missing = expected
                .iter()
                .filter(|id| !passing.contains_key(*id))
                .cloned()
                .collect();
            return Err(NotReady { timeout, missing });
        }
        tokio::time::sleep(POLL).await;
    }
}
