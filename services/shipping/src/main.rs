//! The `shipping` binary: the mesh's service `main` with shipping's identity and `run`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    mesh::server::main(&shipping::IDENTITY, shipping::run)
}
