//! Generated protobuf and gRPC code for `proto/`.
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// The encoded `FileDescriptorSet` of every `.proto`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mesh_descriptor.bin"));

/// `mesh.users.v1`
pub mod users {
    pub mod v1 {
        tonic::include_proto!("mesh.users.v1");
    }
}

/// `mesh.inventory.v1`
pub mod inventory {
    pub mod v1 {
        tonic::include_proto!("mesh.inventory.v1");
    }
}

/// `mesh.payments.v1`
pub mod payments {
    pub mod v1 {
        tonic::include_proto!("mesh.payments.v1");
    }
}

/// `mesh.orders.v1`
pub mod orders {
    pub mod v1 {
        tonic::include_proto!("mesh.orders.v1");
    }
}
