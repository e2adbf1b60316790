//! The mesh's API gateway (`gateway`): the front door for curl, browsers
//! and mobile clients. It serves REST/JSON transcoded from the protos'
//! `google.api.http` annotations, gRPC and gRPC-Web on one port, verifies
//! bearer tokens at the edge, limits callers, and calls the services
//! through the mesh client with its own Connect identity, `gateway`.
//!
//! - [`api`]: the exposed methods and their routes, read from descriptors;
//! - [`transcode`]: JSON ↔ protobuf by the proto3 JSON mapping;
//! - [`errors`]: gRPC statuses as HTTP answers with `google.rpc.Status` bodies;
//! - [`auth`], [`protect`]: tokens, access rules, rate limits, deadlines;
//! - [`openapi`], [`page`]: `GET /openapi.json` and the shop page at `GET /`;
//! - [`observe`]: the access log and HTTP metrics;
//! - [`app`], [`rest`], [`grpc`], [`server`], [`tls`]: the request path and the port.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod auth;
pub mod codec;
pub mod config;
pub mod errors;
pub mod exchange;
mod grpc;
pub mod observe;
pub mod openapi;
pub mod page;
pub mod protect;
mod rest;
pub mod server;
pub mod tls;
pub mod transcode;
pub mod upstream;

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use mesh::{
    server::{Runnable, ServeError},
    service::{ServiceIdentity, ServiceKind},
};

pub use config::Config;

/// Who the gateway is: an edge (no database, no gRPC service of its own)
/// with Consul name and Connect identity `gateway` (the name its health
/// reports too) on HTTP port 8080.
pub const IDENTITY: ServiceIdentity = ServiceIdentity {
    name: mesh::caller::EDGE_IDENTITY,
    kind: ServiceKind::Edge,
    default_port: 8080,
};

/// The gateway as a program: what its binary and `mesh serve gateway` run.
pub const SERVICE: Runnable = Runnable {
    identity: &IDENTITY,
    serve: |args| Box::pin(mesh::server::serve_args(&IDENTITY, args, run)),
    example: None,
};

/// `text` from a caller, cut to what an answer or a log repeats of it
/// (`mesh::bounded::MAX_ITEM_BYTES`, with `…` when cut).
pub fn bounded(text: &str) -> String {
    mesh::bounded::cut(text, mesh::bounded::MAX_ITEM_BYTES)
}

/// Why the gateway's own settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Plaintext on a non-loopback address without `--allow-plaintext`.
    #[error("{0} is not a loopback address: serve HTTPS there (--tls-cert, --tls-key), or add --allow-plaintext behind a proxy that terminates TLS")]
    PlaintextOutsideLoopback(SocketAddr),
    /// Keys without issuer or audience.
    #[error("--jwt-keys needs --jwt-issuer and --jwt-audience: tokens are checked for both")]
    IssuerAndAudience,
    /// A descriptor set could not be read.
    #[error("--descriptor-set {path}: {source}")]
    DescriptorSet {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The API could not be built.
    #[error(transparent)]
    Api(#[from] api::ApiError),
    /// The token keys do not load.
    #[error(transparent)]
    Keys(#[from] auth::keys::KeyError),
    /// The certificate does not load.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A CORS origin is not a valid header value.
    #[error("--cors-origin {0:?} is not a valid origin")]
    CorsOrigin(String),
}

impl From<SettingsError> for ServeError {
    fn from(error: SettingsError) -> Self {
        ServeError::Settings(Box::new(error))
    }
}

/// Binds, then serves until SIGTERM/SIGINT (and drains).
pub async fn run(config: Config) -> Result<(), ServeError> {
    let bound = mesh::server::bind(&IDENTITY, &config.service).await?;
    let address = bound.local_addr();
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(
            tls::Tls::load(tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .map_err(SettingsError::from)?,
        ),
        _ => None,
    };
    if tls.is_none() && !address.ip().is_loopback() && !config.allow_plaintext {
        return Err(SettingsError::PlaintextOutsideLoopback(address).into());
    }
    let consul = config.service.consul.config()?;
    let options = mesh::client::ClientOptions {
        identity: bound.connect_identity(),
        ..mesh::client::ClientOptions::default()
    };
    let mesh_client = mesh::client::MeshClient::new(consul, options);
    let api = Arc::new(load_api(&config)?);
    let upstreams = upstream::Upstreams::new(&mesh_client, api.upstream_services());
    let gateway = Arc::new(build(&config, api, upstreams)?);
    let _reload_keys = AbortOnDrop(gateway.auth.spawn_reload(std::time::Duration::from_secs(1)));
    let _cleanup = AbortOnDrop(
        gateway
            .rates
            .spawn_cleanup(std::time::Duration::from_secs(60)),
    );
    let _reload_cert = tls
        .as_ref()
        .map(|tls| AbortOnDrop(tls.spawn_reload(std::time::Duration::from_secs(5))));
    let settings = server::ServerSettings {
        header_read_timeout: config.header_read_timeout,
        max_header_bytes: config.max_header_bytes,
        max_headers: config.max_headers,
        max_connections: config.max_connections,
        max_streams: 256,
        shutdown_grace: config.max_request_timeout,
    };
    tracing::info!(
        %address,
        scheme = if tls.is_some() { "https" } else { "http" },
        methods = gateway.api.methods().len(),
        "the gateway exposes {} methods (GET /openapi.json lists them)",
        gateway.api.methods().len()
    );
    bound
        .serve_edge(move |listener, stop| server::serve(listener, gateway, settings, tls, stop))
        .await
}

/// The API of the build's descriptors and the `--descriptor-set`s.
pub fn load_api(config: &Config) -> Result<api::Api, SettingsError> {
    let mut extra = Vec::new();
    for path in &config.descriptor_sets {
        extra.push(
            std::fs::read(path).map_err(|source| SettingsError::DescriptorSet {
                path: path.display().to_string(),
                source,
            })?,
        );
    }
    Ok(api::Api::load(&extra)?)
}

/// The gateway of `config` serving `api` and calling `upstreams`.
pub fn build(
    config: &Config,
    api: Arc<api::Api>,
    upstreams: upstream::Upstreams,
) -> Result<exchange::Gateway, SettingsError> {
    let auth = if config.jwt_keys.is_empty() {
        tracing::warn!("no --jwt-keys: only public methods can be called");
        auth::Authenticator::without_keys()
    } else {
        let (Some(issuer), Some(audience)) = (&config.jwt_issuer, &config.jwt_audience) else {
            return Err(SettingsError::IssuerAndAudience);
        };
        auth::Authenticator::new(auth::TokenRules {
            key_files: config.jwt_keys.clone(),
            issuer: issuer.clone(),
            audience: audience.clone(),
            leeway: config.jwt_leeway,
        })?
    };
    let rates = protect::rate::RateLimits::new(
        protect::rate::Rate {
            per_second: config.rate_limit,
            burst: config.rate_burst,
        },
        protect::rate::Rate {
            per_second: config.anonymous_rate_limit,
            burst: config.anonymous_rate_burst,
        },
    );
    Ok(exchange::Gateway {
        openapi: Bytes::from(openapi::to_bytes(&api)),
        api,
        upstreams,
        auth,
        rates,
        deadlines: protect::deadline::Deadlines {
            default: config.request_timeout.min(config.max_request_timeout),
            max: config.max_request_timeout,
        },
        limits: exchange::Limits {
            max_body_bytes: config.max_body_bytes,
            max_url_bytes: config.max_url_bytes,
        },
        trusted_proxies: config.trusted_proxies.clone(),
        metrics: observe::HttpMetrics::register(),
        access_log: match config.access_log {
            config::AccessLogTarget::Stdout => observe::AccessLog::stdout(),
            config::AccessLogTarget::Off => observe::AccessLog::off(),
        },
        cors: cors(&config.cors_origins)?,
    })
}

/// CORS for the configured origins, exposing the gRPC status headers
/// gRPC-Web clients read; `None` without origins (no CORS headers at all:
/// browsers keep other origins out).
fn cors(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>, SettingsError> {
    use http::{header, HeaderName, HeaderValue, Method};
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|origin| {
            HeaderValue::from_str(origin.trim())
                .map_err(|_| SettingsError::CorsOrigin(origin.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-grpc-web"),
                HeaderName::from_static("x-user-agent"),
                HeaderName::from_static("grpc-timeout"),
                HeaderName::from_static("x-request-timeout"),
            ])
            .expose_headers([
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    ))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
