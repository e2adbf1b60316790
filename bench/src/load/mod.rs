//! `mesh-bench load` (also `mesh bench`): load one RPC through the mesh
//! client, a direct channel or a proxy, and report throughput, errors by
//! code and latency percentiles.
//!
//! Exit 0 when the run completed (errors are part of the report), 1 when it
//! could not run (no connection, preparation failed) or no request succeeded.

mod report;
mod rest;
mod round_robin;
pub(crate) mod routing;
mod rpc;
mod targets;
mod via;
mod workers;

use std::{io::IsTerminal as _, process::ExitCode, time::Duration};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use mesh::{client::Channel, config::duration};
use tonic::Code;

use report::Report;
use rpc::{Rpc, TimedCaller};
use via::Via;
use workers::{Plan, Stop};

/// Length of a run given neither `--duration` nor `--requests`.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// `mesh-bench load` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct LoadArgs {
    /// The RPC to load.
    #[arg(long, value_enum)]
    rpc: Rpc,

    /// What the requests go through: the mesh client (Consul-resolved,
    /// balanced, retrying) unless `--direct` or `--proxy` says otherwise.
    #[command(flatten)]
    via: via::ViaArgs,

    /// Requests in flight at once (one per worker task).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    concurrency: u16,

    /// How long to send requests: `10s`, `500ms`, `2m` (default 10s).
    #[arg(value_name = "DURATION", long, value_parser = parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,

    /// Send exactly this many requests instead of running for a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,

    /// Cap the rate over all workers: `500/s` (or `500`).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,

    /// Also report a timeline: requests, errors and latency per window of
    /// this length (`100ms`), by start time.
    #[arg(value_name = "DURATION", long, value_parser = parse_duration)]
    timeline: Option<Duration>,

    /// Deadline of each request.
    #[arg(value_name = "DURATION", long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,

    /// Print one JSON object instead of the text report (no progress bar).
    #[arg(long)]
    json: bool,

    /// `--gateway`: the folder of the token signing key the gateway
    /// trusts (`token-signing-key.pem`, as `mesh up` writes it).
    #[arg(long, default_value = ".mesh/gateway")]
    gateway_keys: std::path::PathBuf,

    /// Metadata on every call, `key=value` (repeat for more), e.g.
    /// `-H x-canary=1` to take a canary route.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE",
          value_parser = mesh_cli::metadata::parse_header)]
    headers: Vec<(http::header::HeaderName, http::HeaderValue)>,

    /// The Consul agent (for the mesh client).
    #[command(flatten)]
    consul: mesh::config::ConsulArgs,

    /// Connect mTLS to the services (the mesh client and `--direct`; a
    /// `--proxy` is dialled in the clear: the proxy is outside the mesh).
    #[command(flatten)]
    mtls: crate::mtls::MtlsArgs,

    /// The quiet-machine limit the report holds the run to (`--max-load`).
    #[command(flatten)]
    machine: crate::busy::LoadLimit,
}

/// Prepares, loads, reports.
pub(crate) async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let via = args.via.resolve()?;
    let machine = match args.machine.measure() {
        Ok(load) => {
            if load.busy {
                eprintln!(
                    "warning: the machine is busy (1-minute load average {:.2} > {}): the report says so; read ratios, not absolute numbers",
                    load.load_average_1m, load.max_load
                );
            }
            Some(load)
        }
        Err(error) => {
            eprintln!("warning: {error:#}: the report has no machine load");
            None
        }
    };
    let rpc = args.rpc;
    if args.headers.len() > mesh_cli::metadata::MAX_HEADERS {
        anyhow::bail!("at most {} -H headers", mesh_cli::metadata::MAX_HEADERS);
    }
    let stop = match (args.requests, args.duration) {
        (Some(requests), _) => Stop::Requests(requests),
        (None, duration) => Stop::After(duration.unwrap_or(DEFAULT_DURATION)),
    };
    // None given: in a checkout where `mesh up` runs, its agent (the
    // operator identity needs the management token).
    let (consul, _) = mesh_cli::consul_settings::resolve_here(
        &args.consul,
        mesh_cli::consul_settings::Holder::Management,
    )?;
    let identity = match via {
        Via::Proxy(_) | Via::Gateway(_) => None,
        Via::Mesh | Via::Direct(_) => args.mtls.client_identity(&consul).await?,
    };
    let mesh_identity = match via {
        // Fixtures made through the mesh need an identity even when the load goes to a proxy.
        Via::Proxy(_) | Via::Gateway(_) if args.mtls.mtls == mesh::config::MtlsMode::Required => {
            args.mtls.client_identity(&consul).await?
        }
        _ => identity.clone(),
    };
    let mesh = || Ok(via::mesh_client(consul.clone(), mesh_identity.clone()));

    let routed = match via {
        Via::Mesh => Some(mesh()?),
        _ => None,
    };
    let channel: Channel = match &via {
        Via::Mesh => routed
            .as_ref()
            .expect("a mesh client for --via mesh")
            .channel(rpc.service()),
        // The gateway cannot make fixtures (AddStock is not exposed): the mesh does.
        Via::Gateway(_) => mesh()?.channel(rpc.service()),
        Via::Direct(address) => {
            via::direct_channels(address, rpc.service(), identity.as_ref()).await?
        }
        Via::Proxy(address) => via::direct_channel(address, rpc.service(), None).await?,
    };
    let fixture = prepare(rpc, &via, &channel, args.requests, mesh).await?;

    let plan = Plan {
        concurrency: usize::from(args.concurrency),
        stop,
        rate: args.rate,
        keep_samples: args.timeline.is_some(),
    };
    let progress = progress_bar(stop, args.json);
    if !args.json {
        eprintln!(
            "bench {} via {via} ({}): concurrency {}, {}{}",
            rpc.name(),
            match identity {
                Some(_) => format!("mTLS as {}", args.mtls.identity),
                None => "plaintext".to_owned(),
            },
            args.concurrency,
            match stop {
                Stop::Requests(n) => format!("{n} requests"),
                Stop::After(duration) => format!("{duration:?}"),
            },
            args.rate
                .map(|rate| format!(", at most {rate}/s"))
                .unwrap_or_default()
        );
    }
    let channel = targets::with_metadata(channel, args.headers.clone());
    let before = routed
        .as_ref()
        .map(|mesh| targets::counts(mesh, rpc.service()));
    let outcome = match &via {
        Via::Gateway(base) => {
            let user_id = fixture.user_id().unwrap_or_default().to_owned();
            let token = match rpc {
                rpc::Rpc::PlaceOrder => Some(
                    gateway::auth::dev::DevKeys::at(&args.gateway_keys)
                        .mint(&user_id, Duration::from_secs(3600))
                        .with_context(|| {
                            format!(
                                "a token for the bench user (--gateway-keys {})",
                                args.gateway_keys.display()
                            )
                        })?,
                ),
                _ => None,
            };
            let caller = rest::RestCaller::new(base, rpc, user_id, token, args.timeout)?;
            workers::run(plan, caller, &progress).await
        }
        _ => {
            let caller = TimedCaller::new(rpc, &fixture, channel, args.timeout);
            workers::run(plan, caller, &progress).await
        }
    };
    progress.finish_and_clear();

    let mut report = Report::new(
        via.label(),
        via.address().map(str::to_owned),
        rpc.name(),
        rpc.service(),
        plan.concurrency,
        &outcome,
        args.timeline,
    );
    report.machine = machine;
    if let (Some(mesh), Some(before)) = (&routed, &before) {
        report.targets = targets::shares(before, &targets::counts(mesh, rpc.service()));
    }
    crate::print_report(&report, args.json, Report::text)?;
    Ok(if report.ok == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prepares through the channel under test; a direct channel to one service
/// cannot make another's fixtures (UNIMPLEMENTED), so those come through the
/// mesh instead.
async fn prepare(
    rpc: Rpc,
    via: &Via,
    channel: &Channel,
    requests: Option<u64>,
    mesh: impl Fn() -> anyhow::Result<mesh::client::MeshClient>,
) -> anyhow::Result<rpc::Fixture> {
    let failed = |status: tonic::Status| {
        anyhow::anyhow!(
            "preparing {} failed: {}: {}",
            rpc.name(),
            mesh::telemetry::grpc_code_name(status.code()),
            status.message()
        )
    };
    if matches!(via, Via::Mesh | Via::Gateway(_)) {
        let mesh = mesh()?;
        return rpc::prepare(rpc, |service| mesh.channel(service), requests)
            .await
            .map_err(failed);
    }
    match rpc::prepare(rpc, |_| channel.clone(), requests).await {
        Ok(fixture) => Ok(fixture),
        Err(status) if status.code() == Code::Unimplemented => {
            let mesh = mesh()?;
            eprintln!(
                "{via} does not serve {}: preparing {} through the mesh (Consul) instead",
                rpc.preparation_services().join(" and "),
                rpc.name()
            );
            rpc::prepare(rpc, |service| mesh.channel(service), requests)
                .await
                .map_err(failed)
                .context("(the load itself still goes where --direct or --proxy says)")
        }
        Err(status) => Err(failed(status)),
    }
}

/// A bar on stderr, hidden for `--json` or when stderr is not a terminal.
fn progress_bar(stop: Stop, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (length, template) = match stop {
        Stop::Requests(requests) => (
            requests,
            "{bar:40} {pos}/{len} {msg} ({per_sec}, eta {eta})",
        ),
        Stop::After(duration) => (
            duration.as_millis().try_into().unwrap_or(u64::MAX),
            "{bar:40} {elapsed_precise} {msg}",
        ),
    };
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// `10s`, `500ms`, `2m`, `1.5s`, or a bare number of seconds; longer than
/// zero (the mesh's one duration parser).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parser(duration::BareUnit::Seconds, Duration::from_nanos(1))(text)
}

/// `500/s` or `500`: requests per second, more than zero.
fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/s");
    match number.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate like 500/s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "0s", "ten", "5 parsecs", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate("500/s"), Ok(500.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        for bad in ["0/s", "-3", "fast", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }
}
