//! The `payments` binary: the mesh's service `main` ([`payments::SERVICE`]).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    payments::SERVICE.main()
}
