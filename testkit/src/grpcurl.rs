//! The real grpcurl.

use std::process::Command;

use crate::paths::tool;

/// What one grpcurl run printed.
#[derive(Debug, Clone)]
pub struct GrpcurlOutput {
    /// Whether it exited 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (grpcurl prints gRPC errors here).
    pub stderr: String,
}

impl GrpcurlOutput {
    /// Parses standard output as JSON (panics with both outputs if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("grpcurl output is not JSON ({error}): {self:?}"))
    }
}

/// Runs `grpcurl -plaintext <args…>` (bounded by `-max-time 10`).
pub fn grpcurl(args: &[&str]) -> GrpcurlOutput {
    let output = Command::new(tool("grpcurl"))
        .args(["-plaintext", "-max-time", "10"])
        .args(args)
        .output()
        .expect("run grpcurl");
    GrpcurlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
