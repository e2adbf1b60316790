//! One event as it travels: CloudEvents 1.0 in binary content mode.
//!
//! Neither AMQP 0-9-1 (what RabbitMQ speaks to `lapin`) nor Redis Streams has
//! an official CloudEvents binding, so both adapters carry the attributes as
//! the **Kafka binding** names them — `ce_<attribute>` headers, and the
//! content type as `content-type` — because Kafka headers, AMQP 0-9-1 header
//! tables and Redis stream fields are all flat name/value lists. The W3C
//! trace context travels beside them as `traceparent` (and `tracestate`), as
//! the OpenTelemetry messaging conventions do.
//!
//! Everything read from a broker is bounded before it is used: a header
//! longer than its limit or a body over [`MAX_DATA_BYTES`] makes the message
//! a [`MalformedEvent`] (dead-lettered by the consumer), never a panic.

use bytes::Bytes;

/// The CloudEvents version this crate writes and accepts.
pub const SPEC_VERSION: &str = "1.0";

/// `datacontenttype` of a protobuf-encoded body.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/protobuf";

/// The largest event body accepted (the services' message limit is 4 MiB;
/// an event is one order, at most 100 lines).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// The longest `ce_id`, `ce_source`, `ce_type`, `ce_subject`, `ce_time` and
/// `content-type` accepted.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;

/// The longest `tracestate` accepted (W3C: at most 32 members of 256 bytes,
/// but propagators keep it under 512).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// Header (field) names on the wire.
pub mod headers {
    /// CloudEvents `specversion`.
    pub const SPECVERSION: &str = "ce_specversion";
    /// CloudEvents `id`: unique per event; a redelivery or a duplicate
    /// publish carries the same id (consumers deduplicate on it).
    pub const ID: &str = "ce_id";
    /// CloudEvents `source`, e.g. `/mesh/orders`.
    pub const SOURCE: &str = "ce_source";
    /// CloudEvents `type`: the protobuf message's full name, e.g.
    /// `mesh.events.v1.OrderConfirmed`.
    pub const TYPE: &str = "ce_type";
    /// CloudEvents `subject`: the aggregate the event is about (the order id).
    pub const SUBJECT: &str = "ce_subject";
    /// CloudEvents `time` (RFC 3339).
    pub const TIME: &str = "ce_time";
    /// CloudEvents `datacontenttype`, under the Kafka binding's name.
    pub const CONTENT_TYPE: &str = "content-type";
    /// W3C trace context of the operation that caused the event.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
    /// The body, where the broker has no separate body (a Redis stream entry).
    pub const DATA: &str = "data";
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `id`.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type`.
    pub event_type: String,
    /// `subject`.
    pub subject: String,
    /// `time`, RFC 3339.
    pub time: String,
    /// `datacontenttype`.
    pub data_content_type: String,
    /// W3C `traceparent`, when the cause was traced.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
    /// The body.
    pub data: Bytes,
}

/// Why a message is not a valid event (bounded text: it may quote input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid CloudEvents message: {reason}")]
pub struct MalformedEvent {
    /// What is wrong.
    pub reason: String,
}

impl MalformedEvent {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: bounded(&reason.into(), 200),
        }
    }
}

impl Event {
    /// A protobuf event about `subject` from `source`, with the given `id`
    /// (the outbox row's) and `time` (unix milliseconds).
    pub fn protobuf(
        id: impl Into<String>,
        source: impl Into<String>,
        event_type: impl Into<String>,
        subject: impl Into<String>,
        time_unix_ms: i64,
        data: impl Into<Bytes>,
    ) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            event_type: event_type.into(),
            subject: subject.into(),
            time: rfc3339(time_unix_ms),
            data_content_type: CONTENT_TYPE_PROTOBUF.to_owned(),
            traceparent: None,
            tracestate: None,
            data: data.into(),
        }
    }

    /// With the W3C trace context of its cause.
    pub fn with_trace(mut self, traceparent: Option<String>, tracestate: Option<String>) -> Self {
        self.traceparent = traceparent.filter(|value| !value.is_empty());
        self.tracestate = tracestate.filter(|value| !value.is_empty());
        self
    }

    /// The attributes as (header name, value) pairs, the body excluded.
    pub fn headers(&self) -> Vec<(&'static str, &str)> {
        let mut pairs = vec![
            (headers::SPECVERSION, SPEC_VERSION),
            (headers::ID, self.id.as_str()),
            (headers::SOURCE, self.source.as_str()),
            (headers::TYPE, self.event_type.as_str()),
            (headers::SUBJECT, self.subject.as_str()),
            (headers::TIME, self.time.as_str()),
            (headers::CONTENT_TYPE, self.data_content_type.as_str()),
        ];
        if let Some(traceparent) = &self.traceparent {
            pairs.push((headers::TRACEPARENT, traceparent));
        }
        if let Some(tracestate) = &self.tracestate {
            pairs.push((headers::TRACESTATE, tracestate));
        }
        pairs
    }

    /// Checks that the event can be published: every required attribute
    /// present and within its bound.
    pub fn validate(&self) -> Result<(), MalformedEvent> {
        let headers = self.headers();
        let read = |name: &str| {
            headers
                .iter()
                .find(|(header, _)| *header == name)
                .map(|(_, value)| value.as_bytes().to_vec())
        };
        Self::from_headers(read, self.data.clone()).map(drop)
    }

    /// Reads an event from a message's headers (`read(name)` gives a
    /// header's raw value) and body.
    pub fn from_headers(
        read: impl Fn(&str) -> Option<Vec<u8>>,
        data: Bytes,
    ) -> Result<Self, MalformedEvent> {
        let text =
            |name: &str, limit: usize, required: bool| -> Result<Option<String>, MalformedEvent> {
                let Some(raw) = read(name) else {
                    return if required {
                        Err(MalformedEvent::new(format!("header {name} is missing")))
                    } else {
                        Ok(None)
                    };
                };
                if raw.len() > limit {
                    return Err(MalformedEvent::new(format!(
                        "header {name} is {} bytes long (at most {limit})",
                        raw.len()
                    )));
                }
                let value = String::from_utf8(raw)
                    .map_err(|_| MalformedEvent::new(format!("header {name} is not UTF-8")))?;
                if required && value.is_empty() {
                    return Err(MalformedEvent::new(format!("header {name} is empty")));
                }
                Ok(Some(value))
            };
        let required = |name: &str| -> Result<String, MalformedEvent> {
            Ok(text(name, MAX_ATTRIBUTE_BYTES, true)?.unwrap_or_default())
        };
        let specversion = required(headers::SPECVERSION)?;
        if specversion != SPEC_VERSION {
            return Err(MalformedEvent::new(format!(
                "{} is {specversion:?}, expected {SPEC_VERSION}",
                headers::SPECVERSION
            )));
        }
        if data.len() > MAX_DATA_BYTES {
            return Err(MalformedEvent::new(format!(
                "the body is {} bytes (at most {MAX_DATA_BYTES})",
                data.len()
            )));
        }
        let time = required(headers::TIME)?;
        time::OffsetDateTime::parse(&time, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                MalformedEvent::new(format!("{} {time:?} is not RFC 3339", headers::TIME))
            })?;
        let traceparent = text(headers::TRACEPARENT, 55, false)?;
        if let Some(traceparent) = &traceparent {
            if !is_traceparent(traceparent) {
                return Err(MalformedEvent::new(format!(
                    "{} {traceparent:?} is not a W3C trace context",
                    headers::TRACEPARENT
                )));
            }
        }
        Ok(Self {
            id: required(headers::ID)?,
            source: required(headers::SOURCE)?,
            event_type: required(headers::TYPE)?,
            subject: required(headers::SUBJECT)?,
            time,
            data_content_type: required(headers::CONTENT_TYPE)?,
            traceparent,
            tracestate: text(headers::TRACESTATE, MAX_TRACESTATE_BYTES, false)?,
            data,
        })
    }

    /// `time` as unix milliseconds (0 if it does not parse, which a
    /// validated event never does).
    pub fn time_unix_ms(&self) -> i64 {
        time::OffsetDateTime::parse(&self.time, &time::format_description::well_known::Rfc3339)
            .map(|time| (time.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(0)
    }
}

/// `version-traceid-parentid-flags`: 2, 32, 16 and 2 lower-case hex digits.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && [2, 32, 16, 2]
            .iter()
            .zip(&parts)
            .all(|(len, part)| part.len() == *len && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Unix milliseconds as RFC 3339 in UTC, with milliseconds.
pub(crate) fn rfc3339(unix_ms: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let time = time
        .replace_nanosecond((time.nanosecond() / 1_000_000) * 1_000_000)
        .unwrap_or(time);
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// At most `max` bytes of `text`, cut on a character boundary, with `…`
/// when something was cut.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event::protobuf(
            "evt-1",
            "/mesh/orders",
            "mesh.events.v1.OrderConfirmed",
            "ord_1",
            1_700_000_000_123,
            Bytes::from_static(b"\x0a\x05ord_1"),
        )
        .with_trace(
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            None,
        )
    }

    fn reader(event: &Event) -> impl Fn(&str) -> Option<Vec<u8>> + '_ {
        move |name| {
            event
                .headers()
                .into_iter()
                .find(|(header, _)| *header == name)
                .map(|(_, value)| value.as_bytes().to_vec())
        }
    }

    #[test]
    fn an_event_round_trips_through_its_headers() {
        let event = sample();
        assert_eq!(event.time, "2023-11-14T22:13:20.123Z");
        assert_eq!(event.time_unix_ms(), 1_700_000_000_123);
        let back = Event::from_headers(reader(&event), event.data.clone()).unwrap();
        assert_eq!(back, event);
        let names: Vec<&str> = event.headers().iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_subject",
                "ce_time",
                "content-type",
                "traceparent"
            ]
        );
    }

    #[test]
    fn missing_long_or_wrong_attributes_are_malformed_with_a_bounded_reason() {
        let event = sample();
        let without_id = |name: &str| {
            if name == headers::ID {
                None
            } else {
                reader(&event)(name)
            }
        };
        let error = Event::from_headers(without_id, event.data.clone()).unwrap_err();
        assert_eq!(error.reason, "header ce_id is missing");

        let long = "x".repeat(10_000);
        let long_subject = |name: &str| {
            if name == headers::SUBJECT {
                Some(long.as_bytes().to_vec())
            } else {
                reader(&event)(name)
            }
        };
        let error = Event::from_headers(long_subject, event.data.clone()).unwrap_err();
        assert!(error.reason.contains("10000 bytes long"), "{error}");

        let bad_trace = sample().with_trace(Some("not-a-trace".into()), None);
        assert!(bad_trace.validate().is_err());
        let mut bad_time = sample();
        bad_time.time = format!("yesterday {}", "!".repeat(1000));
        let error = bad_time.validate().unwrap_err();
        assert!(error.reason.len() <= 203, "{}", error.reason.len());
        let mut old = sample();
        old.data = Bytes::from(vec![0; MAX_DATA_BYTES + 1]);
        assert!(old.validate().is_err());
    }

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("ééé", 3), "é…");
    }
}
