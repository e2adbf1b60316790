//! The `shipping` binary: the mesh's service `main` ([`shipping::SERVICE`]).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    shipping::SERVICE.main()
}
