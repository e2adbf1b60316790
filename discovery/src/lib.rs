//! Consul self-registration and health-aware discovery.
//!
//! - [`Registrar`] registers a service instance with the local Consul agent
//!   (a gRPC health check included), keeps the registration alive across
//!   agent restarts, and deregisters on shutdown. Serving never waits for it.
//! - [`Resolver`] watches `/v1/health/service/<name>?passing` with blocking
//!   queries and offers the healthy instances as [`Snapshot`]s and as a tower
//!   [`Discover`] stream. While Consul is unreachable it keeps the last set.
//!
//! - [`chain::ChainWatch`] follows a service's discovery chain (its router,
//!   splitter and resolver config entries, compiled by Consul) the same way.
//!
//! - [`ConsulHttp`] is the one HTTP client for every other agent call (HTTP or
//!   HTTPS with rustls, the token from a value or a file re-read on rotation).
//!
//! The crate knows nothing of the mesh's protos: endpoints are addresses plus
//! Consul's tags and meta. [`ConsulSettings`] reads Consul's own environment
//! variables (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_SSL`, `CONSUL_CACERT`,
//! `CONSUL_HTTP_TOKEN_FILE`…). The Consul token travels as `X-Consul-Token` on
//! every request and is never logged or printed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use discovery::{ConsulConfig, GrpcCheck, Registrar, RegistrarOptions, Resolver, ResolverOptions, ServiceRegistration};
//!
//! let consul = ConsulConfig::from_env()?;
//! let registration = ServiceRegistration {
//!     id: "users-1".into(),
//!     name: "users".into(),
//!     address: "127.0.0.1".parse()?,
//!     port: 50051,
//!     tags: vec![],
//!     meta: [("version".to_owned(), "0.1.0".to_owned())].into(),
//!     check: GrpcCheck::new("mesh.users.v1.Users"),
//!     connect_native: false,
//! };
//! let registrar = Registrar::try_spawn(consul.clone(), registration, RegistrarOptions::default())?;
//! let resolver = Resolver::spawn(consul, "users", ResolverOptions::default());
//! let discover = resolver.discover(); // hand to tower::balance
//! # drop(discover);
//! registrar.deregister().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod agent;
mod backoff;
mod blocking;
pub mod chain;
mod config;
pub mod connect;
pub mod env;
mod error;
mod error_chain;
mod health;
mod http;
mod registrar;
mod registration;
mod resolver;
mod tls;
mod token;

pub use backoff::{Backoff, Jitter};
pub use config::{ConsulConfig, ConsulSettings, CONSUL_ENVIRONMENT, DEFAULT_ADDRESS};
pub use error::{ConfigError, ConsulError};
pub use error_chain::error_chain;
pub use health::Endpoint;
pub use http::{Answer, ConsulHttp};
pub use registrar::{Registrar, RegistrarHandle, RegistrarOptions, RegistrationState};
pub use registration::{GrpcCheck, ServiceRegistration};
pub use resolver::{Discover, Resolver, ResolverOptions, Snapshot};
