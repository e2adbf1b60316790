//! The `payments` binary: the mesh's service `main` with payments's identity and `run`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    mesh::server::main(&payments::IDENTITY, payments::run)
}
