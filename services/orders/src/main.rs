//! The `orders` binary: the mesh's service `main` ([`orders::SERVICE`]).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    orders::SERVICE.main()
}
