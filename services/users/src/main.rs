//! The `users` binary: the mesh's service `main` with users's identity and `run`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    mesh::server::main(&users::IDENTITY, users::run)
}
