//! The `gateway` binary's flags: every service's ([`ServiceArgs`]: listen
//! address, Consul, mTLS, telemetry, drain) and the edge's own.

use std::{path::PathBuf, time::Duration};

use mesh::config::{
    duration::{parser, BareUnit},
    ServiceArgs,
};

use crate::protect::client_addr::Cidr;

/// `--access-log`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// One JSON line per request on standard output.
    Stdout,
    /// No access log.
    Off,
}

fn seconds(
    min: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    parser(BareUnit::Seconds, min)
}

/// The `gateway` binary's flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "gateway",
    version,
    about = "The mesh's API gateway: REST/JSON (from google.api.http), gRPC and gRPC-Web at the edge, calling the services through the mesh"
)]
pub struct Config {
    /// Flags every service takes (`--listen` defaults to 127.0.0.1:8080).
    #[command(flatten)]
    pub service: ServiceArgs,

    /// PEM certificate chain for HTTPS on the listen port (re-read when it changes).
    #[arg(long, env = "MESH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "MESH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve plaintext HTTP on a non-loopback address (behind a proxy that
    /// terminates TLS). Without it, plaintext is allowed on loopback only.
    #[arg(long, env = "MESH_ALLOW_PLAINTEXT", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_plaintext: bool,

    /// Token verification keys: JWKS files or PEM public keys (EC P-256 for
    /// ES256, RSA for RS256; a PEM key's id is its file name without
    /// extension). Comma-separated or repeated; re-read when they change.
    #[arg(long = "jwt-keys", env = "MESH_JWT_KEYS", value_delimiter = ',')]
    pub jwt_keys: Vec<PathBuf>,

    /// The `iss` tokens must carry (required with --jwt-keys).
    #[arg(long, env = "MESH_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` tokens must carry (required with --jwt-keys).
    #[arg(long, env = "MESH_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed on `exp` and `nbf` (at most 5m).
    #[arg(value_name = "DURATION", long, env = "MESH_JWT_LEEWAY", default_value = "30s", value_parser = seconds(Duration::ZERO))]
    pub jwt_leeway: Duration,

    /// Requests per second per token subject (0: no limit). Per replica.
    #[arg(long, env = "MESH_RATE_LIMIT", default_value_t = 50)]
    pub rate_limit: u32,

    /// Requests a token subject may send at once.
    #[arg(long, env = "MESH_RATE_BURST", default_value_t = 100)]
    pub rate_burst: u32,

    /// Requests per second per client address without a token (public
    /// methods such as the sign-up, refused tokens); 0: no limit. Per replica.
    #[arg(long, env = "MESH_ANONYMOUS_RATE_LIMIT", default_value_t = 5)]
    pub anonymous_rate_limit: u32,

    /// Requests a client address without a token may send at once.
    #[arg(long, env = "MESH_ANONYMOUS_RATE_BURST", default_value_t = 20)]
    pub anonymous_rate_burst: u32,

    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the
    /// client. Comma-separated or repeated; none by default.
    #[arg(
        long = "trusted-proxy",
        env = "MESH_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<Cidr>,

    /// Browser origins allowed by CORS (`https://shop.example.com`);
    /// comma-separated or repeated; none by default.
    #[arg(long = "cors-origin", env = "MESH_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Deadline of a call whose caller names none (becomes the mesh call's grpc-timeout).
    #[arg(value_name = "DURATION", long, env = "MESH_REQUEST_TIMEOUT", default_value = "10s",
          value_parser = seconds(Duration::from_millis(1)))]
    pub request_timeout: Duration,

    /// The longest deadline a caller may ask for (grpc-timeout, X-Request-Timeout).
    #[arg(value_name = "DURATION", long, env = "MESH_MAX_REQUEST_TIMEOUT", default_value = "60s",
          value_parser = seconds(Duration::from_millis(1)))]
    pub max_request_timeout: Duration,

    /// Largest request body (JSON, or one gRPC message), in bytes.
    #[arg(long, env = "MESH_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Longest path and query string, in bytes.
    #[arg(long, env = "MESH_MAX_URL_BYTES", default_value_t = 4096)]
    pub max_url_bytes: usize,

    /// Largest request head (request line and headers), in bytes.
    #[arg(long, env = "MESH_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Most header fields in one request.
    #[arg(long, env = "MESH_MAX_HEADERS", default_value_t = 64)]
    pub max_headers: usize,

    /// A client must send its request headers within this.
    #[arg(value_name = "DURATION", long, env = "MESH_HEADER_READ_TIMEOUT", default_value = "10s",
          value_parser = seconds(Duration::from_millis(1)))]
    pub header_read_timeout: Duration,

    /// Most open client connections.
    #[arg(long, env = "MESH_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// More encoded FileDescriptorSets whose annotated methods to expose
    /// (services built outside this repository). Comma-separated or repeated.
    #[arg(
        long = "descriptor-set",
        env = "MESH_DESCRIPTOR_SETS",
        value_delimiter = ','
    )]
    pub descriptor_sets: Vec<PathBuf>,

    /// Where the access log goes.
    #[arg(long, env = "MESH_ACCESS_LOG", value_enum, default_value_t = AccessLogTarget::Stdout)]
    pub access_log: AccessLogTarget,
}

impl mesh::config::ServiceConfig for Config {
    fn service_args(&self) -> &ServiceArgs {
        &self.service
    }
}
