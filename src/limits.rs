//! Limits every server and client of the mesh share.

/// Largest request or response message a service accepts and the mesh
/// client buffers (4 MiB). A larger one is refused with RESOURCE_EXHAUSTED.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
