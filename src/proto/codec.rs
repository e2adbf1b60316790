//! The codec of every generated client and server: prost's, with message
//! buffers sized for this mesh's messages (the pattern of tonic's
//! `codec_buffers` example).
//!
//! tonic starts each call's encode and decode buffers at 8 KiB: four 8 KiB
//! allocations per unary call (request and response, client and server),
//! for messages that here are a few hundred bytes. glibc serves a block that
//! size from its large bins, not the per-thread cache, and a profile of
//! orders under PlaceOrder showed those allocations among the allocator's
//! top callers (`docs/BENCHMARKS.md`, run 9). At [`MESSAGE_BUFFER_BYTES`]
//! the blocks come from the thread cache; a larger message grows its
//! buffer as it always did.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The initial size of a call's encode and decode buffers.
pub const MESSAGE_BUFFER_BYTES: usize = 1024;

/// How many bytes a streaming encoder gathers before it yields (tonic's own
/// default, unchanged).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// [`tonic_prost::ProstCodec`] with [`MESSAGE_BUFFER_BYTES`] buffers; named by
/// `build.rs` as the generated code's codec.
#[derive(Debug, Clone)]
pub struct ProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(MESSAGE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}

#[cfg(test)]
mod tests {
    use tonic::codec::{EncodeBody, Streaming};

    use super::*;

    #[tokio::test]
    async fn messages_of_any_size_round_trip() {
        let messages = vec![
            "small".to_owned(),
            String::new(),
            "x".repeat(MESSAGE_BUFFER_BYTES),
            "y".repeat(64 * 1024),
            "z".repeat(3),
        ];
        let mut codec = ProstCodec::<String, String>::default();
        let source = futures::stream::iter(messages.clone().into_iter().map(Ok));
        let body = EncodeBody::new_client(codec.encoder(), source, None, None);
        let mut decoded = Streaming::new_request(codec.decoder(), body, None, None);
        let mut received = Vec::new();
        while let Some(message) = decoded.message().await.expect("decodes") {
            received.push(message);
        }
        assert_eq!(received, messages);
    }
}
