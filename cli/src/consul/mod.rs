//! The Consul agent as the CLI sees it: its HTTP API ([`ConsulApi`]), the
//! parts of its answers we read ([`model`]), and that API as the `localenv`
//! engine's client ([`BlockingCalls`]).

mod api;
mod blocking;
pub(crate) mod model;

pub(crate) use api::{ApiError, ConsulApi};
pub(crate) use blocking::BlockingCalls;
