//! The Consul agent as the CLI sees it: its HTTP API ([`ConsulApi`]), the
//! parts of its answers we read ([`model`]), and a dev agent that `mesh up`
//! can start when none answers ([`DevAgent`]).

mod agent;
mod api;
pub(crate) mod model;

pub(crate) use agent::{free_ports, DevAgent};
pub(crate) use api::{ApiError, ConsulApi};
