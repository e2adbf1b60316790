//! The `localenv` engine is synchronous and makes its Consul calls through
//! the caller's client: this adapter gives it ours ([`ConsulApi`]: HTTPS,
//! token files, errors naming the fix), driven from a blocking thread.

use localenv::{CallError, ConsulCalls};
use serde_json::Value;
use tokio::runtime::Handle;

use super::ConsulApi;

/// [`ConsulApi`] as the engine's [`ConsulCalls`]; use it on a blocking
/// thread (`spawn_blocking`), never on the runtime's own.
#[derive(Debug, Clone)]
pub(crate) struct BlockingCalls {
    api: ConsulApi,
    runtime: Handle,
}

impl BlockingCalls {
    /// Calls through `api` on `runtime`.
    pub(crate) fn new(api: ConsulApi, runtime: Handle) -> Self {
        Self { api, runtime }
    }
}

impl ConsulCalls for BlockingCalls {
    fn get(&self, path: &str) -> Result<Value, CallError> {
        self.runtime
            .block_on(self.api.get_json(path))
            .map_err(CallError::new)
    }

    fn put(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        self.runtime
            .block_on(self.api.put_json(path, body))
            .map_err(CallError::new)
    }

    fn delete(&self, path: &str) -> Result<(), CallError> {
        self.runtime
            .block_on(self.api.delete(path))
            .map_err(CallError::new)
    }
}
