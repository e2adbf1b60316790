//! The `inventory` binary: the mesh's service `main` with inventory's identity and `run`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    mesh::server::main(&inventory::IDENTITY, inventory::run)
}
