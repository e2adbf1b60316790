//! The `gateway` binary: the mesh's service `main` with the gateway's identity and `run`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    mesh::server::main(&gateway::IDENTITY, gateway::run)
}
