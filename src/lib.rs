//! `mesh`: the shared library of the mesh's services and clients.
//!
//! - [`proto`]: the generated gRPC types of the four shop services;
//! - [`idempotency`]: which RPCs may be retried, read from the protos;
//! - [`server`]: the one bootstrap every service runs (health, reflection,
//!   Consul registration, graceful drain);
//! - [`client`]: the tower stack that resolves, balances and retries;
//! - [`connect`]: Consul Connect-native mTLS identities;
//! - [`storage`], [`validate`], [`config`], [`telemetry`]: what every service shares.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod client;
pub mod config;
pub mod connect;
pub mod idempotency;
pub mod proto;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod validate;
