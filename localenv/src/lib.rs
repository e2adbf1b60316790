//! The one engine for local environments: what `mesh up`, `mesh env`, the
//! test harness and the scripts start on this machine to run the mesh
//! against, and stop again.
//!
//! - [`Supervised`]: any server process with a log file, its own process
//!   group, a [`Probe`] that says when it is ready, a graceful stop (SIGTERM,
//!   a grace period, SIGKILL) and a reap — also when dropped. A new server
//!   (a broker) is a [`ProcessSpec`] and a probe.
//! - [`consul::LocalConsul`]: a Consul agent on given or free loopback ports,
//!   in the secure posture (ACLs default-deny, HTTPS only, certificates from
//!   `consul tls`, the mesh's ACL policies and one token per holder) or plain
//!   (ACLs off, HTTP), from the one agent configuration
//!   ([`consul::config`]).
//! - [`brokers`]: the message brokers events go through — `redis-server`
//!   (append-only file, `appendfsync always`) and RabbitMQ (its node and its
//!   own `epmd`) — as supervised processes with readiness probes.
//! - [`acl`]: the mesh's ACL policies (`deploy/consul/acl/*.hcl`) and their
//!   bootstrap into any Consul with ACLs on; [`secrets`]: token files.
//! - [`Description`]: `<state>/env.json`, what a running local environment
//!   is (addresses, CA, token files), so that other commands find it.
//!
//! The engine is synchronous (std processes, blocking waits) so that tests
//! use it directly; async callers run it on a blocking thread. It makes no
//! HTTP calls of its own: the caller passes its Consul client as
//! [`ConsulCalls`] (the CLI its one Consul client, the harness its own).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod acl;
pub mod brokers;
mod calls;
pub mod consul;
mod description;
mod error;
pub mod ports;
mod probe;
mod process;
pub mod secrets;

pub use calls::{CallError, ConsulCalls};
pub use description::{ConsulDescription, Description, DEFAULT_STATE_DIR, FILE_NAME};
pub use error::Error;
pub use probe::{Cancel, Probe, TcpProbe};
pub use process::{describe, log_tail, ProcessSpec, RunAs, Stopped, Supervised};
