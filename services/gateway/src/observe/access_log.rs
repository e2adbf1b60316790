//! One JSON line per request on standard output (method, route template,
//! status, latency, trace id, the caller's subject — never the token), the
//! shape log pipelines ingest. Lines are handed to a writer thread through
//! a bounded queue: a slow stdout never slows requests; when the queue is
//! full a line is dropped and counted (`gateway_access_log_dropped_total`).

use std::{
    io::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{sync_channel, SyncSender, TrySendError},
        Arc,
    },
};

/// Lines waiting for the writer at most.
const QUEUE: usize = 8192;

/// One request's line.
#[derive(Debug, serde::Serialize)]
pub struct AccessRecord<'a> {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// The HTTP method.
    pub method: &'a str,
    /// The route template (`/v1/orders/{order_id}`), the gRPC method, or
    /// empty when nothing matched.
    pub route: &'a str,
    /// The HTTP status.
    pub status: u16,
    /// The gRPC status of the call behind it, when one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<i32>,
    /// Milliseconds until the response head.
    pub latency_ms: f64,
    /// The request's trace id (32 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// The token's subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    /// The client address (after trusted proxies).
    pub client: String,
    /// `grpc`, `grpc-web` or `rest`.
    pub protocol: &'a str,
}

/// Where access lines go.
#[derive(Debug, Clone)]
pub struct AccessLog {
    sender: Option<SyncSender<Vec<u8>>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Lines to standard output, written by their own thread.
    pub fn stdout() -> Self {
        let (sender, receiver) = sync_channel::<Vec<u8>>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                while let Ok(line) = receiver.recv() {
                    let mut out = stdout.lock();
                    let _ = out.write_all(&line);
                    // Whatever else is queued, then one flush.
                    while let Ok(more) = receiver.try_recv() {
                        let _ = out.write_all(&more);
                    }
                    let _ = out.flush();
                }
            })
            .expect("spawning the access-log thread");
        Self::with(Some(sender))
    }

    /// No access log (`--access-log off`).
    pub fn off() -> Self {
        Self::with(None)
    }

    fn with(sender: Option<SyncSender<Vec<u8>>>) -> Self {
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        mesh::telemetry::metrics::register_counter_fn(
            "gateway_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind",
            &[],
            move || counter.load(Ordering::Relaxed),
        );
        Self { sender, dropped }
    }

    /// Queues one line.
    pub fn write(&self, record: &AccessRecord<'_>) {
        let Some(sender) = &self.sender else {
            return;
        };
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        if let Err(TrySendError::Full(_)) = sender.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_line_without_absent_fields() {
        let record = AccessRecord {
            time: "2026-01-01T00:00:00Z".into(),
            method: "POST",
            route: "/v1/orders",
            status: 200,
            grpc_status: Some(0),
            latency_ms: 1.5,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            subject: None,
            client: "127.0.0.1".into(),
            protocol: "rest",
        };
        let line = serde_json::to_string(&record).unwrap();
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["route"], "/v1/orders");
        assert_eq!(parsed["status"], 200);
        assert!(parsed.get("subject").is_none());
    }
}
