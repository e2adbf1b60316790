//! The local environment as the CLI runs it, on the `localenv` engine:
//!
//! - [`agent`]: start a local Consul agent (secure unless told otherwise)
//!   from async code, stop it, and record it in `<state>/env.json`;
//! - [`settings`]: where the operator's commands (`mesh status`, `mesh
//!   cert`, `mesh acl …`) find Consul — Consul's own variables and flags
//!   first, else the local environment `mesh up` describes, else the default;
//! - [`command`]: `mesh env`, the local environment alone (what the scripts
//!   run), printed as variables to use, until a stop signal.

pub(crate) mod agent;
pub(crate) mod command;
pub(crate) mod settings;
