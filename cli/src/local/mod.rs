//! The local environment as the CLI runs it, on the `localenv` engine:
//!
//! - [`agent`]: start a local Consul agent (secure unless told otherwise)
//!   from async code, stop it, and record it in `<state>/env.json`;
//! - where the operator's commands find Consul is shared with the
//!   benchmark lab: [`mesh_cli::consul_settings`];
//! - [`command`]: `mesh env`, the local environment alone (what the scripts
//!   run), printed as variables to use, until a stop signal.

pub(crate) mod agent;
pub(crate) mod command;
