//! [`RoundRobin`]: the `--direct A,B,C` baseline over several instances — one
//! plain tonic channel per instance, each call to the next in turn. It adds
//! no queue and no load tracking: the cheapest balancing a hand-written
//! client could do, so the mesh is compared with a direct client to the
//! **same number of instances**.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use mesh::client::Channel;
use tonic::body::Body;
use tower::Service;

/// Calls go to each channel in turn (cloning shares the turn).
#[derive(Clone)]
pub(crate) struct RoundRobin {
    channels: Vec<Channel>,
    turn: Arc<AtomicUsize>,
    /// The channel picked by the last `poll_ready`, used by the next `call`.
    picked: Option<usize>,
}

impl RoundRobin {
    /// Over `channels` (at least one).
    pub(crate) fn new(channels: Vec<Channel>) -> Self {
        assert!(!channels.is_empty(), "round robin over no channel");
        Self {
            channels,
            turn: Arc::default(),
            picked: None,
        }
    }
}

impl Service<http::Request<Body>> for RoundRobin {
    type Response = http::Response<Body>;
    type Error = tonic::Status;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        let index = *self
            .picked
            .get_or_insert_with(|| self.turn.fetch_add(1, Ordering::Relaxed) % self.channels.len());
        self.channels[index].poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let index = self
            .picked
            .take()
            .expect("poll_ready before call (tower's contract)");
        self.channels[index].call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, ServiceExt};

    fn answering(name: &'static str) -> Channel {
        Channel::new(service_fn(move |_: http::Request<Body>| async move {
            let mut response = http::Response::new(Body::empty());
            response
                .headers_mut()
                .insert("instance", http::HeaderValue::from_static(name));
            Ok::<_, tonic::Status>(response)
        }))
    }

    #[tokio::test]
    async fn calls_go_to_each_instance_in_turn_across_clones() {
        let round_robin = RoundRobin::new(vec![answering("a"), answering("b"), answering("c")]);
        let mut seen = Vec::new();
        for n in 0..6 {
            // Every call on a fresh clone: the turn is shared.
            let mut clone = round_robin.clone();
            let response = (&mut clone)
                .oneshot(http::Request::new(Body::empty()))
                .await
                .unwrap_or_else(|status| panic!("call {n}: {status}"));
            seen.push(response.headers()["instance"].to_str().unwrap().to_owned());
        }
        assert_eq!(seen, ["a", "b", "c", "a", "b", "c"]);
    }
}
