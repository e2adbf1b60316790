//! What `mesh up` prints once everything passes: where the UI is, every
//! instance, grpcurl commands to paste, where the logs are.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, time::Duration};

use localenv::consul::{LocalConsul, Posture};

use super::{
    plan::InstancePlan,
    seed::{Demo, DEMO_STOCK},
};
use mesh_cli::services;

use crate::{cert::CertFiles, consul::model::HealthEntry, tools};

/// Everything the banner shows.
#[derive(Debug)]
pub(crate) struct Banner<'a> {
    /// `http(s)://host:port` of the Consul agent.
    pub(crate) consul_url: &'a str,
    /// The agent `mesh up` started (its CA and token files), if it did.
    pub(crate) local: Option<&'a LocalConsul>,
    /// Whether the operator's commands run here find that agent by
    /// themselves (its description is `./.mesh/env.json` or above).
    pub(crate) described_here: bool,
    /// The instances, in plan order.
    pub(crate) plan: &'a [InstancePlan],
    /// Their passing entries, by service ID.
    pub(crate) passing: &'a BTreeMap<String, HealthEntry>,
    /// Current pids by name (`consul`, `users-1`…).
    pub(crate) pids: &'a BTreeMap<String, u32>,
    /// The demo data, when seeded.
    pub(crate) demo: Option<&'a Demo>,
    /// The operator's certificate files (`None` with `--mtls=off`).
    pub(crate) operator: Option<&'a CertFiles>,
    /// The local token key the gateway trusts.
    pub(crate) gateway_keys: &'a gateway::auth::dev::DevKeys,
    /// The state folder as the user gave it.
    pub(crate) state_dir: &'a Path,
    /// The logs folder as the user gave it.
    pub(crate) logs_dir: &'a Path,
    /// The pid file.
    pub(crate) pid_file: &'a Path,
    /// How long it took to get here.
    pub(crate) elapsed: Duration,
}

impl Banner<'_> {
    /// The text to print.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nmesh is up: {} instances passing in Consul after {:.1} s\n",
            self.plan.len(),
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(out, "Consul UI: {}/ui/", self.consul_url);
        if let Some((ca, read, master)) = self.local.and_then(|agent| {
            Some((
                agent.ca_file()?,
                agent.token_file("mesh-read")?,
                agent.token_file("master")?,
            ))
        }) {
            let _ = writeln!(
                out,
                "           ACLs default-deny, HTTPS only. The browser must trust the CA {}\n           (or accept its warning); then log in (\"Log in\" in the UI) with the read-only\n           token in {}\n           (full rights: the master token in {})",
                ca.display(),
                read.display(),
                master.display()
            );
        } else if self.local.is_some() {
            let _ = writeln!(
                out,
                "           ACLs off, plain HTTP (--insecure-consul): not a security boundary"
            );
        }
        if self.local.is_none() {
            let _ = writeln!(
                out,
                "           (an agent that was already running; left running on exit)"
            );
        }
        let _ = writeln!(out);
        self.render_instances(&mut out);
        self.render_demo(&mut out);
        self.render_commands(&mut out);
        self.render_front_door(&mut out);
        let _ = writeln!(
            out,
            "Logs: {}/ (consul.log when started here, <service>-<n>.log); pids: {}",
            self.logs_dir.display(),
            self.pid_file.display()
        );
        let _ = writeln!(
            out,
            "Ctrl-C stops every instance (drained) and Consul if started here."
        );
        out
    }

    fn address_of(&self, instance: &InstancePlan) -> String {
        self.passing.get(&instance.id()).map_or_else(
            || format!("127.0.0.1:{}", instance.port),
            HealthEntry::socket_address,
        )
    }

    fn render_instances(&self, out: &mut String) {
        let mut rows: Vec<[String; 4]> = vec![[
            "INSTANCE".into(),
            "ADDRESS".into(),
            "PID".into(),
            "LOG".into(),
        ]];
        if let Some(pid) = self.pids.get("consul") {
            rows.push([
                "consul".into(),
                self.consul_url.to_owned(),
                pid.to_string(),
                self.logs_dir.join("consul.log").display().to_string(),
            ]);
        }
        for instance in self.plan {
            let id = instance.id();
            rows.push([
                id.clone(),
                self.address_of(instance),
                self.pids.get(&id).map(u32::to_string).unwrap_or_default(),
                self.logs_dir
                    .join(format!("{id}.log"))
                    .display()
                    .to_string(),
            ]);
        }
        let widths: Vec<usize> = (0..4)
            .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
            .collect();
        for row in rows {
            let _ = writeln!(
                out,
                "  {:<w0$}  {:<w1$}  {:<w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
        }
        let _ = writeln!(out);
    }

    fn render_demo(&self, out: &mut String) {
        let Some(demo) = self.demo else {
            return;
        };
        let stock: Vec<String> = demo
            .stock
            .iter()
            .map(|(item, added)| {
                format!(
                    "{} {} available{}",
                    item.sku,
                    item.available,
                    if *added { " (added now)" } else { "" }
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "Demo data: user {} (user_id {}); {}\n",
            demo.user.email,
            demo.user.user_id,
            stock.join(", ")
        );
    }

    fn render_commands(&self, out: &mut String) {
        let grpcurl = match self.operator {
            Some(files) => format!("{} {}", tools::grpcurl_command(), files.grpcurl_flags()),
            None => format!("{} -plaintext", tools::grpcurl_command()),
        };
        let user_id = self
            .demo
            .map_or("<user id>", |demo| demo.user.user_id.as_str());
        let sku = DEMO_STOCK[0].0;
        match self.operator {
            Some(files) => {
                let _ = writeln!(
                    out,
                    "Try it over mTLS as {} (every service has reflection; instance 1 of each;\n\
                     -insecure: Connect certificates name services by SPIFFE URI only, which grpcurl\n\
                     cannot check — the services still verify and authorize this certificate):",
                    files.service_uri
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "Try it (plaintext; every service has reflection; instance 1 of each):"
                );
            }
        }
        for runnable in services::ALL {
            let service = runnable.identity;
            let Some(instance) = self.plan.iter().find(|i| i.service == *service) else {
                continue;
            };
            let address = self.address_of(instance);
            let _ = writeln!(out, "  # {}", service.name);
            let Some(grpc_service) = service.grpc_service() else {
                // An edge serves HTTP, not gRPC.
                let _ = writeln!(out, "  curl http://{address}/");
                continue;
            };
            let _ = writeln!(out, "  {grpcurl} {address} list {grpc_service}");
            // The service's own example call, with the demo shop's data.
            if let Some(example) = runnable.example {
                let body = example.body_for(user_id, sku, &uuid::Uuid::new_v4().to_string());
                let _ = writeln!(
                    out,
                    "  {grpcurl} -d '{body}' {address} {grpc_service}/{}",
                    example.method
                );
            }
        }
        let mesh = command_beside_this("mesh");
        let lab = command_beside_this("mesh-bench");
        let _ = writeln!(out, "  # the whole mesh");
        let status = self.operator_prefix("mesh-read");
        let _ = writeln!(out, "  {}{mesh} status{}", status.0, status.1);
        let bench = self.operator_prefix("master");
        let _ = writeln!(
            out,
            "  {}{lab} load --rpc place-order --duration 10s{}\n",
            bench.0, bench.1
        );
    }

    fn render_front_door(&self, out: &mut String) {
        let Some(gateway) = self
            .plan
            .iter()
            .find(|i| i.service.name == gateway::IDENTITY.name)
        else {
            return;
        };
        let mesh = command_beside_this("mesh");
        let default_state = Path::new(".mesh");
        let door = super::front_door::FrontDoor {
            address: self.address_of(gateway),
            user_id: self
                .demo
                .map_or("<user id>", |demo| demo.user.user_id.as_str()),
            sku: DEMO_STOCK[0].0,
            mesh: &mesh,
            state_dir: (self.state_dir != default_state)
                .then(|| self.state_dir.display().to_string()),
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            page_token: self.demo.and_then(|demo| {
                self.gateway_keys
                    .mint(&demo.user.user_id, super::front_door::PAGE_TOKEN_TTL)
                    .ok()
            }),
            skus: DEMO_STOCK.iter().map(|(sku, _, _)| *sku).collect(),
        };
        out.push_str(&door.render());
    }

    /// What an operator's command needs in front of it (variables) and after
    /// it (flags) to reach this agent with `token`: nothing when the command
    /// finds the local environment by itself, or the agent is Consul's default.
    fn operator_prefix(&self, token: &str) -> (String, String) {
        let default_url = format!("http://{}", discovery::DEFAULT_ADDRESS);
        match self.local {
            Some(_) if self.described_here => (String::new(), String::new()),
            Some(agent) if agent.posture() == Posture::Secure => {
                let file = |path: Option<std::path::PathBuf>| {
                    path.map(|path| path.display().to_string())
                        .unwrap_or_default()
                };
                (
                    format!(
                        "CONSUL_HTTP_ADDR={} CONSUL_CACERT={} CONSUL_HTTP_TOKEN_FILE={} ",
                        self.consul_url,
                        file(agent.ca_file().map(Path::to_owned)),
                        file(agent.token_file(token))
                    ),
                    String::new(),
                )
            }
            _ if self.consul_url == default_url => (String::new(), String::new()),
            _ => (String::new(), format!(" --consul-addr {}", self.consul_url)),
        }
    }
}

/// How to run `program` from this executable's folder (this program itself,
/// or the benchmark lab built beside it): its bare name when that is what
/// `PATH` finds, else its full path.
fn command_beside_this(program: &str) -> String {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|current| Some(current.parent()?.join(program)));
    match (tools::on_path(program), beside) {
        (Some(found), Some(beside)) if same_file(&found, &beside) => program.to_owned(),
        (_, Some(beside)) => beside.display().to_string(),
        (_, None) => program.to_owned(),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
