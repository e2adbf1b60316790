//! Generated protobuf and gRPC code for `proto/`.
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

pub mod codec;

/// The encoded `FileDescriptorSet` of every `.proto`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mesh_descriptor.bin"));

// `pub mod mesh { pub mod users { pub mod v1 { … } } … }`, one module per
// package under `proto/`, written by build.rs.
include!(concat!(env!("OUT_DIR"), "/mesh_protos.rs"));

/// Every package as `mesh::proto::<service>::v1` (`users`, `inventory`…).
pub use self::mesh::*;
