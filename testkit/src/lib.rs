//! The one test harness of the mesh: free loopback ports, real
//! child processes (a Consul dev agent, service binaries, grpcurl) behind
//! guards that kill and reap them on drop — also when a test fails — and
//! readiness waits with bounded timeouts.
//!
//! Tools come from the project's tools folder (`scripts/install-tools`
//! fills it; `MESH_TOOLS_DIR` overrides). A missing tool is a test failure,
//! never a silent skip.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent_client;
mod brokers;
pub mod conformance;
mod connect;
mod consul;
mod fault_proxy;
mod grpcurl;
pub mod harness;
mod metrics;
pub mod otlp;
mod paths;
mod ports;
mod postgres;
mod process;
mod reflection;
mod run;
mod service;
mod wait;

pub use agent_client::AgentClient;
pub use brokers::{RabbitServer, RedisServer, TlsFiles};
pub use connect::{grpcurl_mtls, CertFiles};

pub use consul::{AclToken, ConsulAgent};
pub use fault_proxy::{Fault, FaultProxy};
pub use grpcurl::{grpcurl, GrpcurlOutput};
pub use metrics::{scrape_metrics, Scrape};
pub use paths::{binary, tool, tools_dir};
pub use ports::free_port;
pub use postgres::Postgres;
pub use process::ChildGuard;
pub use reflection::list_services_v1;
pub use run::{json_report, output_within};
pub use service::{ServiceOptions, ServiceProcess};
pub use wait::wait_until;
