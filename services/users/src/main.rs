//! The `users` binary: the mesh's service `main` ([`users::SERVICE`]).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    users::SERVICE.main()
}
