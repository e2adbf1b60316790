//! Command-line flags shared by every service binary: flags with
//! environment fall-backs, where Consul's and OpenTelemetry's own variable
//! names win.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

pub mod duration;
mod mtls_mode;
mod version;

pub use mtls_mode::MtlsMode;
pub use version::parse_version_meta;

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

    /// The version registered in Consul as `Meta.version`: what a
    /// `service-resolver` subset selects (`Service.Meta.version == "v2"`) to
    /// route a canary. Letters, digits, `.`, `_`, `-`; at most 64.
    #[arg(long, env = "MESH_SERVICE_VERSION", default_value = "v1", value_parser = parse_version_meta)]
    pub version_meta: String,

    /// OTLP/gRPC collector to export traces to, e.g. `http://127.0.0.1:4317`
    /// (export is off when unset).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// `service.name` of the exported traces. Default: the service's name.
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,

    /// How long to keep serving after deregistering on SIGTERM, so that
    /// clients' Consul watches converge before the listener closes (`2s`,
    /// `500ms`; a bare number is milliseconds).
    #[arg(value_name = "DURATION", long = "drain", alias = "drain-ms", env = "MESH_DRAIN_MS",
          default_value = "2s", value_parser = duration::millis)]
    pub drain: Duration,

    /// Interval of the gRPC health check the Consul agent runs against us
    /// (`2s`; a bare number is milliseconds; at least 100 ms).
    #[arg(value_name = "DURATION", long = "check-interval", alias = "check-interval-ms",
          env = "MESH_CHECK_INTERVAL_MS", default_value = "2s",
          value_parser = duration::parser(duration::BareUnit::Millis, Duration::from_millis(100)))]
    pub check_interval: Duration,

    /// `required` (default): the service port accepts only Consul Connect mTLS
    /// and authorizes callers by intentions, and upstream calls use mTLS too.
    /// `off`: plaintext end to end (local experiments only). `--no-consul`
    /// needs `off`: without an agent there is no Connect certificate.
    #[arg(long, env = "MESH_MTLS", value_enum, default_value_t = MtlsMode::Required)]
    pub mtls: MtlsMode,

    /// Plaintext port serving only `grpc.health.v1` (for Consul's check and
    /// kubelet probes, which cannot present a Connect certificate). Default:
    /// the listen IP and a free port (registered in Consul as the check target).
    #[arg(long, env = "MESH_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// How often a live inbound connection's authorization is checked again
    /// (cached per caller identity), so that a revoked intention closes it
    /// (`5s`; a bare number is milliseconds; at least 100 ms).
    #[arg(value_name = "DURATION", long = "authz-recheck", alias = "authz-recheck-ms",
          env = "MESH_AUTHZ_RECHECK_MS", default_value = "5s",
          value_parser = duration::parser(duration::BareUnit::Millis, Duration::from_millis(100)))]
    pub authz_recheck: Duration,

    /// How long a live or new inbound connection may be served on an
    /// authorization decision the Consul agent has not confirmed (while it
    /// does not answer); past it, the caller is refused until the agent
    /// answers again. Never beyond the caller's certificate, whose expiry
    /// closes the connection anyway. Bare numbers are seconds; at least one
    /// re-check period (`--authz-recheck`).
    #[arg(value_name = "DURATION", long = "authz-max-stale", env = "MESH_AUTHZ_MAX_STALE", default_value = "1h",
          value_parser = duration::parser(duration::BareUnit::Seconds, Duration::from_millis(100)))]
    pub authz_max_stale: Duration,

    /// Longest a new connection to the mesh port may take from its accept to
    /// a completed TLS handshake (its first byte included). Bare numbers are
    /// seconds.
    #[arg(value_name = "DURATION", long = "handshake-timeout", env = "MESH_HANDSHAKE_TIMEOUT", default_value = "5s",
          value_parser = duration::parser(duration::BareUnit::Seconds, Duration::from_millis(100)))]
    pub handshake_timeout: Duration,

    /// Most connections the mesh port holds before their TLS handshake
    /// completes; a newcomer beyond it closes the oldest.
    #[arg(long = "max-pending-handshakes", env = "MESH_MAX_PENDING_HANDSHAKES", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_handshakes: u32,

    /// Serve without registering in Consul (standalone).
    #[arg(long, env = "MESH_NO_CONSUL", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_consul: bool,

    /// Consul agent connection.
    #[command(flatten)]
    pub consul: ConsulArgs,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,

    /// Test-only: delay every application RPC's reply by this long (a bare
    /// number is milliseconds). Only in builds with the `inject-latency`
    /// feature, which the test builds enable.
    #[cfg(feature = "inject-latency")]
    #[arg(value_name = "DURATION", long = "inject-latency", alias = "inject-latency-ms",
          env = "MESH_INJECT_LATENCY_MS", hide = true, value_parser = duration::millis)]
    pub inject_latency: Option<Duration>,
}

/// How to reach the Consul agent: the flags of every binary (services and
/// `mesh`), each with the environment variable Consul's own CLI reads, with
/// the same meaning. `Debug` redacts the token.
#[derive(clap::Args, Clone)]
pub struct ConsulArgs {
    /// Consul agent HTTP address: `host:port`, `http://host:port` or
    /// `https://host:port` (default 127.0.0.1:8500).
    #[arg(long = "consul-addr", env = discovery::env::HTTP_ADDR)]
    pub address: Option<String>,

    /// HTTPS to the agent when the address names no scheme.
    #[arg(long = "consul-ssl", env = discovery::env::HTTP_SSL, value_parser = clap::builder::BoolishValueParser::new())]
    pub ssl: Option<bool>,

    /// `false` accepts any agent certificate (test setups only).
    #[arg(long = "consul-ssl-verify", env = discovery::env::HTTP_SSL_VERIFY, value_parser = clap::builder::BoolishValueParser::new())]
    pub ssl_verify: Option<bool>,

    /// PEM file of the CA that signed the agent's certificate (default: the
    /// system's trust store).
    #[arg(long = "consul-cacert", env = discovery::env::CACERT)]
    pub ca_file: Option<PathBuf>,

    /// Folder of PEM files of CAs, every file read (used when no
    /// `--consul-cacert` is given, as in Consul).
    #[arg(long = "consul-capath", env = discovery::env::CAPATH)]
    pub ca_path: Option<PathBuf>,

    /// PEM client certificate, for an agent that verifies incoming connections.
    #[arg(long = "consul-client-cert", env = discovery::env::CLIENT_CERT)]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of `--consul-client-cert`.
    #[arg(long = "consul-client-key", env = discovery::env::CLIENT_KEY)]
    pub client_key: Option<PathBuf>,

    /// Name the agent's certificate must carry (default: the address's host).
    #[arg(long = "consul-tls-server-name", env = discovery::env::TLS_SERVER_NAME)]
    pub tls_server_name: Option<String>,

    /// ACL token sent on every Consul call (never logged). Prefer
    /// `CONSUL_HTTP_TOKEN_FILE`: a flag shows in the process list.
    #[arg(
        long = "consul-token",
        env = discovery::env::HTTP_TOKEN,
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// File holding the ACL token, read again when it changes (a rotated
    /// token needs no restart); as in Consul, it wins over the token.
    #[arg(long = "consul-token-file", env = discovery::env::HTTP_TOKEN_FILE)]
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for ConsulArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The settings' Debug redacts the token.
        std::fmt::Debug::fmt(&self.settings(), f)
    }
}

impl ConsulArgs {
    /// Whether any flag or Consul variable was given (else a command may use
    /// the local environment `mesh up` describes, or the defaults).
    pub fn is_given(&self) -> bool {
        self.address.is_some()
            || self.ssl.is_some()
            || self.ssl_verify.is_some()
            || self.ca_file.is_some()
            || self.ca_path.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.tls_server_name.is_some()
            || self.token.as_deref().is_some_and(|token| !token.is_empty())
            || self.token_file.is_some()
    }

    /// The settings as the discovery crate takes them.
    pub fn settings(&self) -> discovery::ConsulSettings {
        discovery::ConsulSettings {
            address: self.address.clone(),
            ssl: self.ssl,
            ssl_verify: self.ssl_verify,
            ca_file: self.ca_file.clone(),
            ca_path: self.ca_path.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            tls_server_name: self.tls_server_name.clone(),
            token: self.token.clone().filter(|token| !token.is_empty()),
            token_file: self.token_file.clone(),
        }
    }

    /// Checks the flags and loads certificates and the token file.
    pub fn config(&self) -> Result<discovery::ConsulConfig, discovery::ConfigError> {
        self.settings().build()
    }
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
/// `mesh::server::serve_args` reads to set up telemetry and serve.
pub trait ServiceConfig: clap::Parser {
    /// The flags every service takes.
    fn service_args(&self) -> &ServiceArgs;
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        consul: ConsulArgs,
    }

    #[derive(clap::Parser, Debug)]
    struct Service {
        #[command(flatten)]
        service: ServiceArgs,
    }

    #[test]
    fn duration_flags_are_named_for_what_they_are_and_the_old_names_still_work() {
        let new = Service::try_parse_from([
            "test",
            "--drain",
            "300ms",
            "--check-interval",
            "1s",
            "--authz-recheck",
            "2s",
        ])
        .expect("the new names");
        let old = Service::try_parse_from([
            "test",
            "--drain-ms",
            "300",
            "--check-interval-ms",
            "1000",
            "--authz-recheck-ms",
            "2000",
        ])
        .expect("the old names, hidden aliases");
        for flags in [&new.service, &old.service] {
            assert_eq!(flags.drain, Duration::from_millis(300));
            assert_eq!(flags.check_interval, Duration::from_secs(1));
            assert_eq!(flags.authz_recheck, Duration::from_secs(2));
        }
        // The environment keeps its names; the help shows only the new flags.
        let command = <Service as clap::CommandFactory>::command();
        let env_of = |id: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .and_then(|arg| arg.get_env())
                .map(|env| env.to_string_lossy().into_owned())
        };
        assert_eq!(env_of("drain").as_deref(), Some("MESH_DRAIN_MS"));
        assert_eq!(
            env_of("check_interval").as_deref(),
            Some("MESH_CHECK_INTERVAL_MS")
        );
        assert_eq!(
            env_of("authz_recheck").as_deref(),
            Some("MESH_AUTHZ_RECHECK_MS")
        );
        let help = <Service as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(help.contains("--drain <DURATION>"), "{help}");
        assert!(!help.contains("-ms"), "{help}");
    }

    #[test]
    fn the_mesh_ports_limits_take_durations_with_units_and_refuse_nonsense() {
        let defaults = Service::try_parse_from(["test"]).expect("defaults").service;
        assert_eq!(defaults.authz_max_stale, Duration::from_secs(3600));
        assert_eq!(defaults.handshake_timeout, Duration::from_secs(5));
        assert_eq!(defaults.max_pending_handshakes, 512);
        let set = Service::try_parse_from([
            "test",
            "--authz-max-stale",
            "90m",
            "--handshake-timeout",
            "1500ms",
            "--max-pending-handshakes",
            "64",
        ])
        .expect("flags")
        .service;
        assert_eq!(set.authz_max_stale, Duration::from_secs(5400));
        assert_eq!(set.handshake_timeout, Duration::from_millis(1500));
        assert_eq!(set.max_pending_handshakes, 64);
        let bare = Service::try_parse_from(["test", "--authz-max-stale", "30"])
            .expect("bare seconds")
            .service;
        assert_eq!(bare.authz_max_stale, Duration::from_secs(30));
        for bad in [
            ["--max-pending-handshakes", "0"],
            ["--handshake-timeout", "0s"],
            ["--authz-max-stale", "soon"],
        ] {
            let error = Service::try_parse_from(["test", bad[0], bad[1]]).expect_err(bad[1]);
            assert!(error.to_string().contains(bad[0]), "{error}");
        }
    }

    #[test]
    fn consul_flags_reach_the_settings_and_the_token_is_redacted() {
        let flags = Flags::try_parse_from([
            "test",
            "--consul-addr",
            "https://127.0.0.1:8501",
            "--consul-cacert",
            "/etc/consul/ca.pem",
            "--consul-capath",
            "/etc/consul/ca.d",
            "--consul-tls-server-name",
            "server.dc1.consul",
            "--consul-ssl-verify",
            "false",
            "--consul-token",
            "s3cr3t-value",
            "--consul-token-file",
            "/run/secrets/consul-token",
        ])
        .expect("flags");
        let settings = flags.consul.settings();
        assert_eq!(settings.address.as_deref(), Some("https://127.0.0.1:8501"));
        assert_eq!(settings.ca_file, Some(PathBuf::from("/etc/consul/ca.pem")));
        assert_eq!(settings.ca_path, Some(PathBuf::from("/etc/consul/ca.d")));
        assert_eq!(
            settings.tls_server_name.as_deref(),
            Some("server.dc1.consul")
        );
        assert_eq!(settings.ssl_verify, Some(false));
        assert_eq!(settings.token.as_deref(), Some("s3cr3t-value"));
        assert_eq!(
            settings.token_file,
            Some(PathBuf::from("/run/secrets/consul-token"))
        );
        let debug = format!("{flags:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(
            debug.contains("consul-token"),
            "the file name is fine: {debug}"
        );
    }
}
