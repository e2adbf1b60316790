//! `mesh`: the shared library of the mesh's services and clients.
//!
//! - [`proto`]: the generated gRPC types of the four shop services;
//! - [`service`]: who a service is ([`service::ServiceIdentity`]);
//! - [`idempotency`]: which RPCs may be retried, read from the protos;
//! - [`deadline`], [`limits`]: what server and client agree on (`grpc-timeout`,
//!   message size, the size of a status);
//! - [`bounded`]: error text and status details built from input, bounded;
//! - [`server`]: the one bootstrap every service runs (health, reflection,
//!   Consul registration, graceful drain);
//! - [`client`]: the tower stack that resolves, balances and retries;
//! - [`connect`]: Consul Connect-native mTLS identities;
//! - [`caller`]: who a request acts for (an end user only through the
//!   gateway's Connect identity);
//! - [`storage`], [`validate`], [`config`], [`telemetry`]: what every service shares.
//!
//! Modules use each other in one direction only (`tests/module_graph.rs`):
//! `server` and `client` both build on `deadline`, `limits`, `service`,
//! `connect`, `config` and `telemetry`, and neither uses the other.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod bounded;
pub mod caller;
pub mod client;
pub mod config;
pub mod connect;
pub mod deadline;
pub mod idempotency;
pub mod limits;
pub mod proto;
pub mod server;
pub mod service;
pub mod storage;
pub mod telemetry;
pub mod validate;
