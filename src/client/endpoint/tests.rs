//! The endpoint against real sockets: an HTTP/2 server written with `h2`
//! (so a test decides when it answers, closes or goes silent), and a TCP
//! peer that never writes.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::{io::AsyncReadExt, net::TcpListener};
use tower::{Service, ServiceExt};

use super::Http2Endpoint;
use crate::client::{error::never_reached_server, options::ClientOptions, NotConnected};

/// A gRPC answer: `HealthCheckResponse { status: SERVING }` in one frame.
const SERVING: &[u8] = b"\0\0\0\0\x02\x08\x01";

/// What the test server does after answering a call.
#[derive(Clone, Copy)]
enum AfterAnswer {
    KeepServing,
    CloseConnection,
}

/// Serves gRPC-shaped answers on `listener`; returns the count of
/// connections it accepted.
async fn h2_server(listener: TcpListener, after: AfterAnswer) -> Arc<AtomicUsize> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let mut body = request.into_body();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    let head = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(())
                        .expect("a valid response");
                    let Ok(mut stream) = respond.send_response(head, false) else {
                        return;
                    };
                    let _ = stream.send_data(Bytes::from_static(SERVING), false);
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let _ = stream.send_trailers(trailers);
                    if let AfterAnswer::CloseConnection = after {
                        connection.graceful_shutdown();
                    }
                }
            });
        }
    });
    accepted
}

fn health_check() -> http::Request<Bytes> {
    http::Request::builder()
        .method("POST")
        .uri("/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Bytes::from_static(b"\0\0\0\0\0"))
        .expect("a valid request")
}

/// Calls once and returns the answer's body bytes and `grpc-status`.
async fn call(endpoint: &mut Http2Endpoint) -> Result<(Bytes, String), tower::BoxError> {
    let response = endpoint.ready().await?.call(health_check()).await?;
    assert_eq!(response.status(), http::StatusCode::OK);
    let collected = response.into_body().collect().await?;
    let status = collected
        .trailers()
        .and_then(|trailers| trailers.get("grpc-status"))
        .and_then(|value| value.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    Ok((collected.to_bytes(), status))
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    (listener, address)
}

#[tokio::test]
async fn calls_share_one_connection_and_read_body_and_trailers() {
    let (listener, address) = listener().await;
    let accepted = h2_server(listener, AfterAnswer::KeepServing).await;
    let mut endpoint = Http2Endpoint::new(&address, "health", &ClientOptions::default()).unwrap();
    for _ in 0..3 {
        let (body, status) = call(&mut endpoint).await.expect("answered");
        assert_eq!(&body[..], SERVING);
        assert_eq!(status, "0");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_closed_connection_is_dialled_again_at_the_next_call() {
    let (listener, address) = listener().await;
    let accepted = h2_server(listener, AfterAnswer::CloseConnection).await;
    let mut endpoint = Http2Endpoint::new(&address, "health", &ClientOptions::default()).unwrap();
    for expected_connections in 1..=3 {
        call(&mut endpoint).await.expect("answered");
        assert_eq!(accepted.load(Ordering::SeqCst), expected_connections);
        // Let the server's GOAWAY reach the client.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_refused_dial_fails_the_call_and_the_endpoint_stays_in_service() {
    let (listener, address) = listener().await;
    drop(listener);
    let mut endpoint = Http2Endpoint::new(&address, "health", &ClientOptions::default()).unwrap();
    for _ in 0..2 {
        // Ready (never an error: the balancer would drop the endpoint for good)…
        let ready = tokio::time::timeout(Duration::from_secs(5), endpoint.ready()).await;
        assert!(ready.expect("ready in time").is_ok());
        // … and the call gets why, marked as never sent.
        let error = endpoint
            .call(health_check())
            .await
            .expect_err("nobody listens");
        let not_connected = error.downcast_ref::<NotConnected>().expect("NotConnected");
        assert!(
            not_connected.reason.contains("TCP connect"),
            "{not_connected}"
        );
        assert!(never_reached_server(&*error));
    }
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_fails_the_open_call() {
    let (listener, address) = listener().await;
    // Accepts and reads everything, never writes: no SETTINGS, no PONG.
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut sink = vec![0; 4096];
        while socket.read(&mut sink).await.is_ok_and(|read| read > 0) {}
    });
    let options = ClientOptions {
        http2_keepalive_interval: Duration::from_millis(50),
        http2_keepalive_timeout: Duration::from_millis(100),
        ..ClientOptions::default()
    };
    let mut endpoint = Http2Endpoint::new(&address, "silent", &options).unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), call(&mut endpoint)).await;
    let error = answered
        .expect("the keep-alive ends the call")
        .expect_err("no answer");
    assert!(!error.to_string().is_empty());
}

#[tokio::test]
async fn dropping_the_endpoint_closes_its_connection() {
    let (listener, address) = listener().await;
    let closed = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut sink = vec![0; 4096];
        while socket.read(&mut sink).await.is_ok_and(|read| read > 0) {}
    });
    let mut endpoint = Http2Endpoint::new(&address, "health", &ClientOptions::default()).unwrap();
    endpoint.ready().await.expect("connected");
    drop(endpoint);
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the peer sees the connection end")
        .expect("the peer task");
}
