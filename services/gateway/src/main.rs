//! The `gateway` binary: the gateway's program (`gateway::SERVICE`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    gateway::SERVICE.main()
}
