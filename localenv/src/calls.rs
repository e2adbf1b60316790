//! The few Consul HTTP calls the engine makes (is there a leader; the ACL
//! bootstrap), through the caller's own client: the CLI passes its one Consul
//! client (HTTPS, token files, errors naming the fix), the test harness its
//! own. The engine itself carries no HTTP stack.

use serde_json::Value;

/// A failed call: what the client said, as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    message: String,
}

impl CallError {
    /// A failure described by `message`.
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }
}

/// JSON calls to one Consul agent, authenticated as the caller decided (the
/// management token for the ACL bootstrap).
pub trait ConsulCalls {
    /// `GET path`, the answer as JSON. A non-2xx answer is an error.
    fn get(&self, path: &str) -> Result<Value, CallError>;

    /// `PUT path` with a JSON body, the answer as JSON.
    fn put(&self, path: &str, body: &Value) -> Result<Value, CallError>;

    /// `DELETE path`.
    fn delete(&self, path: &str) -> Result<(), CallError>;
}
