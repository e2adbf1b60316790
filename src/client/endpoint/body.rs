//! A response body read straight from its HTTP/2 stream: every DATA frame
//! is handed on as it arrives (and its bytes given back to the flow-control
//! window at once), then the trailers, where gRPC puts its status.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::connection::CallGuard;

/// The body of one response (see the module docs). Its call counts as open
/// on its connection until it is dropped.
pub(crate) struct ResponseBody {
    stream: h2::RecvStream,
    data_done: bool,
    done: bool,
    _call: CallGuard,
}

impl ResponseBody {
    pub(crate) fn new(stream: h2::RecvStream, call: CallGuard) -> Self {
        let done = stream.is_end_stream();
        Self {
            stream,
            data_done: done,
            done,
            _call: call,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Our reading is the only back-pressure: the window opens
                    // again as soon as the caller has the bytes.
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.stream.poll_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
