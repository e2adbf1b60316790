//! The `mesh` command's list of the mesh's services ([`services::ALL`]),
//! shared by the binary (`src/main.rs`) and its tests, which check every file
//! that names the services against it.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod services;
