//! Limits every server and client of the mesh share.
//!
//! A status is sent in HTTP/2 headers (trailers), so its size is bounded by
//! the receiving client's header-list limit, not by the message size limit:
//! every mesh server keeps its statuses within [`MAX_STATUS_MESSAGE_BYTES`]
//! and [`MAX_STATUS_DETAILS_BYTES`] (built bounded by `crate::bounded`, cut on
//! the way out by the server), and every mesh client accepts
//! [`MAX_RESPONSE_HEADER_LIST_BYTES`], derived from them.

/// Largest request or response message a service accepts and the mesh
/// client buffers (4 MiB). A larger one is refused with RESOURCE_EXHAUSTED.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Longest `grpc-message` a mesh server sends, in bytes of UTF-8 (before
/// percent-encoding, which may triple it): room for twenty problems named
/// in words.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 2 * 1024;

/// Largest `grpc-status-details-bin` a mesh server sends: the encoded
/// `google.rpc.Status` (its code, a copy of the message, the details),
/// before base64 adds a third.
pub const MAX_STATUS_DETAILS_BYTES: usize = 8 * 1024;

/// Room for everything else in a response's headers or trailers: `:status`,
/// `content-type`, `grpc-status`, `date` and the metadata a handler adds,
/// with HPACK's 32 bytes counted per field.
pub const OTHER_RESPONSE_HEADER_BYTES: usize = 8 * 1024;

/// The largest header list a mesh server's response may need: the message
/// percent-encoded at worst (3 bytes per byte), the details in base64 and
/// the rest — 25,260 bytes. The mesh client sets its HTTP/2
/// `SETTINGS_MAX_HEADER_LIST_SIZE` to this: with HTTP/2's usual 16 KiB a
/// full status (all non-ASCII message, full details) would not fit, the
/// client would reset the stream, and the caller would see INTERNAL instead
/// of the answer.
pub const MAX_RESPONSE_HEADER_LIST_BYTES: usize = 3 * MAX_STATUS_MESSAGE_BYTES
    + MAX_STATUS_DETAILS_BYTES.div_ceil(3) * 4
    + OTHER_RESPONSE_HEADER_BYTES;

#[cfg(test)]
mod tests {
    use super::*;

    /// The header list of `status` as HTTP/2 counts it: name + value + 32
    /// per field (RFC 9113 §6.5.2), with the response's own fields.
    fn header_list_bytes(status: &tonic::Status) -> usize {
        let response = status.clone().into_http::<tonic::body::Body>();
        32 + ":status".len()
            + 3
            + response
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 32)
                .sum::<usize>()
    }

    #[test]
    fn the_client_limit_is_derived_from_the_server_bounds() {
        assert_eq!(MAX_RESPONSE_HEADER_LIST_BYTES, 25_260);
        // The worst status a mesh server sends: a message of 3-byte
        // characters (9 bytes each once percent-encoded) and full details.
        let worst = tonic::Status::with_details(
            tonic::Code::FailedPrecondition,
            "€".repeat(MAX_STATUS_MESSAGE_BYTES / 3),
            bytes::Bytes::from(vec![0xff; MAX_STATUS_DETAILS_BYTES]),
        );
        let needed = header_list_bytes(&worst);
        assert!(
            needed + 1024 <= MAX_RESPONSE_HEADER_LIST_BYTES,
            "{needed} bytes of headers, limit {MAX_RESPONSE_HEADER_LIST_BYTES}"
        );
        assert!(
            needed > 16 * 1024,
            "HTTP/2's usual 16 KiB would not do ({needed} bytes)"
        );
    }
}
