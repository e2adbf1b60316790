//! Command-line flags shared by every service binary: flags with
//! environment fall-backs, where Consul's and OpenTelemetry's own variable
//! names win.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

/// Flags every service takes (flatten into the binary's `clap::Parser`).
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceArgs {
    /// Address to serve gRPC on; port 0 picks a free port (the bound one is registered).
    /// Default: 127.0.0.1 and the service's well-known port.
    #[arg(long, env = "MESH_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// IP address registered in Consul. Default: the bound IP, or, when bound to
    /// an unspecified address (0.0.0.0), the local IP that routes to Consul.
    #[arg(long, env = "MESH_ADVERTISE")]
    pub advertise: Option<IpAddr>,

    /// Folder of the service's SQLite database (`<service>.db`), used unless
    /// `DATABASE_URL` is set.
    #[arg(long, env = "MESH_DATA_DIR", default_value = ".mesh/data")]
    pub data_dir: PathBuf,

    /// A database URL (`postgres://…` or `sqlite://…`) that replaces the SQLite
    /// file in `--data-dir`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// This instance's id; the Consul service ID is `<service>-<instance-id>`.
    /// Default: `<hostname>-<port>`.
    #[arg(long, env = "MESH_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Address to serve Prometheus `/metrics` on (off when unset).
    #[arg(long, env = "MESH_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// OTLP/gRPC collector to export traces to, e.g. `http://127.0.0.1:4317`
    /// (export is off when unset).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// `service.name` of the exported traces. Default: the service's name.
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,

    /// How long to keep serving after deregistering on SIGTERM, so that
    /// clients' Consul watches converge before the listener closes.
    #[arg(long, env = "MESH_DRAIN_MS", default_value_t = 2000)]
    pub drain_ms: u64,

    /// Interval of the gRPC health check the Consul agent runs against us.
    #[arg(long, env = "MESH_CHECK_INTERVAL_MS", default_value_t = 2000)]
    pub check_interval_ms: u64,

    /// `required` (default): the service port accepts only Consul Connect mTLS
    /// and authorizes callers by intentions, and upstream calls use mTLS too.
    /// `off`: plaintext end to end (local experiments only). `--no-consul`
    /// needs `off`: without an agent there is no Connect certificate.
    #[arg(long, env = "MESH_MTLS", value_enum, default_value_t = crate::connect::MtlsMode::Required)]
    pub mtls: crate::connect::MtlsMode,

    /// Plaintext port serving only `grpc.health.v1` (for Consul's check and
    /// kubelet probes, which cannot present a Connect certificate). Default:
    /// the listen IP and a free port (registered in Consul as the check target).
    #[arg(long, env = "MESH_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// How often a live inbound connection's authorization is checked again
    /// (cached per caller identity), so that a revoked intention closes it.
    #[arg(long, env = "MESH_AUTHZ_RECHECK_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub authz_recheck_ms: u64,

    /// Serve without registering in Consul (standalone).
    #[arg(long, env = "MESH_NO_CONSUL", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_consul: bool,

    /// Consul agent connection.
    #[command(flatten)]
    pub consul: ConsulArgs,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,

    /// Test-only: delay every application RPC by this many milliseconds.
    #[arg(long, env = "MESH_INJECT_LATENCY_MS", hide = true)]
    pub inject_latency_ms: Option<u64>,
}

impl ServiceArgs {
    /// The drain period after deregistration.
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }

    /// The re-check period of live connections' authorization.
    pub fn authz_recheck(&self) -> Duration {
        Duration::from_millis(self.authz_recheck_ms)
    }
}

/// How to reach the Consul agent.
#[derive(clap::Args, Debug, Clone)]
pub struct ConsulArgs {
    /// Consul agent HTTP address, with or without `http://`.
    #[arg(
        long = "consul-addr",
        env = "CONSUL_HTTP_ADDR",
        default_value = "127.0.0.1:8500"
    )]
    pub address: String,

    /// ACL token sent on every Consul call (never logged).
    #[arg(
        long = "consul-token",
        env = "CONSUL_HTTP_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Log output settings.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// `text` for people, `json` for log pipelines. Filter with `RUST_LOG`.
    #[arg(long, env = "MESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A service binary's flags: its own plus [`ServiceArgs`], which
/// `mesh::server::main` reads to set up telemetry and serve.
pub trait ServiceConfig: clap::Parser {
    /// The flags every service takes.
    fn service_args(&self) -> &ServiceArgs;
}
