//! One pending event of the outbox: as the unit that records it writes the
//! row and hands it to its relay (`handoff`), and as the relay reads it
//! back and publishes it (`crate::outbox`).

/// One pending event, as the relay publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The CloudEvents id.
    pub event_id: String,
    /// The order (the event's subject).
    pub order_id: String,
    /// Its place among the order's events.
    pub sequence: i64,
    /// The topic.
    pub topic: String,
    /// The CloudEvents type.
    pub event_type: String,
    /// The protobuf body.
    pub body: Vec<u8>,
    /// W3C trace context of its cause.
    pub traceparent: String,
    /// W3C trace state.
    pub tracestate: String,
    /// When it was recorded.
    pub created_at_unix_ms: i64,
}
