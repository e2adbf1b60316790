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

    /// Asserts that the call failed with the gRPC status `code`, spelled as
    /// grpcurl prints it (`InvalidArgument`, `NotFound`, …), and that its
    /// error text contains each of `mentions`; panics with the whole output
    /// otherwise.
    #[track_caller]
    pub fn assert_status(&self, code: &str, mentions: &[&str]) {
        assert!(
            !self.success,
            "expected Code: {code}, but the call succeeded: {self:?}"
        );
        let code_line = format!("Code: {code}");
        assert!(
            self.stderr.lines().any(|line| line.trim() == code_line),
            "{code_line:?} missing from grpcurl's error: {self:?}"
        );
        for mention in mentions {
            assert!(
                self.stderr.contains(mention),
                "{mention:?} missing from grpcurl's error: {self:?}"
            );
        }
    }
}

/// Runs `grpcurl -plaintext <args…>` (bounded by `-max-time 10`).
pub fn grpcurl(args: &[&str]) -> GrpcurlOutput {
    run(["-plaintext"].into_iter().map(String::from), args)
}

/// Runs grpcurl with `transport` flags (plaintext, or a certificate's),
/// `-max-time 10`, then `args`.
pub(crate) fn run(transport: impl IntoIterator<Item = String>, args: &[&str]) -> GrpcurlOutput {
    let output = Command::new(tool("grpcurl"))
        .args(transport)
        .args(["-max-time", "10"])
        .args(args)
        .output()
        .expect("run grpcurl");
    GrpcurlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
