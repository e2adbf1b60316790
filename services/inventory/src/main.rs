//! The `inventory` binary: the mesh's service `main` ([`inventory::SERVICE`]).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    inventory::SERVICE.main()
}
