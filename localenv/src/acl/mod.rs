//! The mesh's ACL policies (one per service, a read-only one, the agent's)
//! and their bootstrap, with a management token, into any Consul with ACLs on
//! (`default_policy = "deny"`): the local secure agent, or a cluster through
//! `mesh acl bootstrap`.

mod bootstrap;
mod policies;

pub use bootstrap::{bootstrap, Issued, PolicySource};
pub use policies::{Policy, TokenSpec, POLICIES, TOKENS};
