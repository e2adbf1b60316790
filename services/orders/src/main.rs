//! The `orders` binary: the mesh's service `main` with orders's identity and `run`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    mesh::server::main(&orders::IDENTITY, orders::run)
}
