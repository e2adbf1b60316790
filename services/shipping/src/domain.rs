//! Shipping's rules, free of I/O: request validation, shipment states, page
//! tokens, and the reading of the orders service's events into typed values.

use mesh::{
    proto::{
        events::v1::{OrderCancelled, OrderConfirmed, OrderLine, OrderRejected},
        shipping::v1::{
            GetShipmentRequest, ListShipmentsRequest, MarkShippedRequest,
            ShipmentStatus as ProtoStatus,
        },
    },
    validate::{check_id, Violations, MAX_ORDER_LINES},
};
use prost::Message;
use tonic::Status;

/// Longest id (shipment, order, user) accepted.
pub const MAX_ID_CHARS: usize = 128;
/// Longest SKU in an event.
pub const MAX_SKU_CHARS: usize = 128;
/// Longest tracking number.
pub const MAX_TRACKING_CHARS: usize = 64;
/// The page size used when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// The largest page size a request may ask for.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The event types shipping acts on (the protobuf messages' full names).
pub mod event_types {
    /// An order was confirmed: ship it.
    pub const CONFIRMED: &str = "mesh.events.v1.OrderConfirmed";
    /// A confirmed order was cancelled: do not ship it (or get it back).
    pub const CANCELLED: &str = "mesh.events.v1.OrderCancelled";
    /// An order was rejected: nothing to ship, but it takes a sequence number.
    pub const REJECTED: &str = "mesh.events.v1.OrderRejected";
}

/// Where a shipment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentStatus {
    /// Not shipped yet.
    Pending,
    /// Left the warehouse.
    Shipped,
    /// Its order was cancelled before it left.
    Cancelled,
    /// Its order was cancelled after it left.
    ReturnRequested,
}

impl ShipmentStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Shipped => "SHIPPED",
            Self::Cancelled => "CANCELLED",
            Self::ReturnRequested => "RETURN_REQUESTED",
        }
    }

    /// Reads a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Shipped,
            Self::Cancelled,
            Self::ReturnRequested,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// The API's enum.
    pub fn to_proto(self) -> ProtoStatus {
        match self {
            Self::Pending => ProtoStatus::Pending,
            Self::Shipped => ProtoStatus::Shipped,
            Self::Cancelled => ProtoStatus::Cancelled,
            Self::ReturnRequested => ProtoStatus::ReturnRequested,
        }
    }

    /// What an order's cancellation makes of a shipment in this state.
    pub fn after_cancel(self) -> Self {
        match self {
            Self::Pending => Self::Cancelled,
            Self::Shipped => Self::ReturnRequested,
            settled => settled,
        }
    }
}

/// The order's one shipment id: `shp_` + the name-based UUID of its id.
pub fn shipment_id_for(order_id: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d65_7368_7368_6970_7069_6e67_0000_0001);
    format!(
        "shp_{}",
        uuid::Uuid::new_v5(&NAMESPACE, order_id.as_bytes()).simple()
    )
}

/// One line to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The SKU.
    pub sku: String,
    /// How many.
    pub quantity: i64,
}

/// An event of the orders service, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    /// OrderConfirmed.
    Confirmed {
        /// The order.
        order_id: String,
        /// Its owner.
        user_id: String,
        /// What to ship.
        lines: Vec<Line>,
        /// The order's event sequence number.
        sequence: i64,
    },
    /// OrderCancelled.
    Cancelled {
        /// The order.
        order_id: String,
        /// The order's event sequence number.
        sequence: i64,
    },
    /// OrderRejected.
    Rejected {
        /// The order.
        order_id: String,
        /// The order's event sequence number.
        sequence: i64,
    },
}

impl OrderEvent {
    /// The order it is about.
    pub fn order_id(&self) -> &str {
        match self {
            Self::Confirmed { order_id, .. }
            | Self::Cancelled { order_id, .. }
            | Self::Rejected { order_id, .. } => order_id,
        }
    }

    /// Its place among the order's events (1, 2, …).
    pub fn sequence(&self) -> i64 {
        match self {
            Self::Confirmed { sequence, .. }
            | Self::Cancelled { sequence, .. }
            | Self::Rejected { sequence, .. } => *sequence,
        }
    }
}

/// Reads an event body of `event_type` about `subject`. `Ok(None)`: a type
/// shipping does not act on. `Err`: a body that breaks the contract (the
/// reason, for the dead letter).
pub fn decode_event(
    event_type: &str,
    subject: &str,
    body: &[u8],
) -> Result<Option<OrderEvent>, String> {
    let decode_error = |error: prost::DecodeError| format!("{event_type} does not decode: {error}");
    let (order_id, sequence, event) = match event_type {
        event_types::CONFIRMED => {
            let confirmed = OrderConfirmed::decode(body).map_err(decode_error)?;
            check_user(&confirmed.user_id)?;
            let lines = check_lines(&confirmed.lines)?;
            (
                confirmed.order_id.clone(),
                confirmed.sequence,
                OrderEvent::Confirmed {
                    order_id: confirmed.order_id,
                    user_id: confirmed.user_id,
                    lines,
                    sequence: 0,
                },
            )
        }
        event_types::CANCELLED => {
            let cancelled = OrderCancelled::decode(body).map_err(decode_error)?;
            (
                cancelled.order_id.clone(),
                cancelled.sequence,
                OrderEvent::Cancelled {
                    order_id: cancelled.order_id,
                    sequence: 0,
                },
            )
        }
        event_types::REJECTED => {
            let rejected = OrderRejected::decode(body).map_err(decode_error)?;
            (
                rejected.order_id.clone(),
                rejected.sequence,
                OrderEvent::Rejected {
                    order_id: rejected.order_id,
                    sequence: 0,
                },
            )
        }
        _ => return Ok(None),
    };
    if order_id.is_empty() || order_id.chars().count() > MAX_ID_CHARS {
        return Err(format!(
            "order_id must be 1 to {MAX_ID_CHARS} characters (got {})",
            order_id.chars().count()
        ));
    }
    if order_id != subject {
        return Err("order_id differs from the event's subject".to_owned());
    }
    let sequence = i64::try_from(sequence)
        .ok()
        .filter(|sequence| *sequence >= 1)
        .ok_or_else(|| format!("sequence must be at least 1 (got {sequence})"))?;
    Ok(Some(match event {
        OrderEvent::Confirmed {
            order_id,
            user_id,
            lines,
            ..
        } => OrderEvent::Confirmed {
            order_id,
            user_id,
            lines,
            sequence,
        },
        OrderEvent::Cancelled { order_id, .. } => OrderEvent::Cancelled { order_id, sequence },
        OrderEvent::Rejected { order_id, .. } => OrderEvent::Rejected { order_id, sequence },
    }))
}

fn check_user(user_id: &str) -> Result<(), String> {
    if user_id.is_empty() || user_id.chars().count() > MAX_ID_CHARS {
        return Err(format!("user_id must be 1 to {MAX_ID_CHARS} characters"));
    }
    Ok(())
}

fn check_lines(lines: &[OrderLine]) -> Result<Vec<Line>, String> {
    if lines.is_empty() || lines.len() > MAX_ORDER_LINES {
        return Err(format!(
            "an order has 1 to {MAX_ORDER_LINES} lines (got {})",
            lines.len()
        ));
    }
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            if line.sku.is_empty() || line.sku.chars().count() > MAX_SKU_CHARS {
                return Err(format!(
                    "lines[{index}].sku must be 1 to {MAX_SKU_CHARS} characters"
                ));
            }
            if line.quantity < 1 {
                return Err(format!("lines[{index}].quantity must be positive"));
            }
            Ok(Line {
                sku: line.sku.clone(),
                quantity: line.quantity,
            })
        })
        .collect()
}

/// Which shipments `ListShipments` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListBy {
    /// The order's (at most one).
    Order(String),
    /// The user's, a page at a time.
    User {
        /// The user.
        user_id: String,
        /// How many at most.
        size: i64,
        /// After this key (`None`: the first page).
        after: Option<PageKey>,
    },
}

/// Where a page of a user's shipments starts: after this one, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKey {
    /// Creation time of the last shipment of the previous page.
    pub created_at_unix_ms: i64,
    /// Its id (ties in one millisecond).
    pub shipment_id: String,
}

impl PageKey {
    /// The opaque token: hex of `<created_at>:<shipment_id>`.
    pub fn encode(&self) -> String {
        let plain = format!("{}:{}", self.created_at_unix_ms, self.shipment_id);
        plain.bytes().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Reads a token made by [`PageKey::encode`]; `None` for anything else.
    pub fn decode(token: &str) -> Option<Self> {
        if token.len() % 2 != 0 || token.len() > 2 * (20 + 1 + MAX_ID_CHARS) {
            return None;
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|at| {
                token
                    .get(at..at + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()?;
        let plain = String::from_utf8(bytes).ok()?;
        let (created, shipment_id) = plain.split_once(':')?;
        let created_at_unix_ms: i64 = created.parse().ok()?;
        let well_formed = shipment_id.len() > 4
            && shipment_id.starts_with("shp_")
            && shipment_id[4..].bytes().all(|b| b.is_ascii_alphanumeric());
        (created_at_unix_ms >= 0 && well_formed).then(|| Self {
            created_at_unix_ms,
            shipment_id: shipment_id.to_owned(),
        })
    }
}

/// Validates `GetShipment`: the id to look up.
pub fn validate_get(request: &GetShipmentRequest) -> Result<String, Status> {
    let mut violations = Violations::new();
    check_id(
        &mut violations,
        "shipment_id",
        &request.shipment_id,
        MAX_ID_CHARS,
    );
    violations.into_result("GetShipmentRequest")?;
    Ok(request.shipment_id.trim().to_owned())
}

/// Validates `ListShipments`: exactly one of order and user; for a user the
/// page size (0: the default) and token.
pub fn validate_list(request: &ListShipmentsRequest) -> Result<ListBy, Status> {
    let mut violations = Violations::new();
    let order_id = request.order_id.trim();
    let user_id = request.user_id.trim();
    let by = match (order_id.is_empty(), user_id.is_empty()) {
        (false, true) => {
            check_id(&mut violations, "order_id", order_id, MAX_ID_CHARS);
            ListBy::Order(order_id.to_owned())
        }
        (true, false) => {
            check_id(&mut violations, "user_id", user_id, MAX_ID_CHARS);
            let size = match i64::from(request.page_size) {
                0 => DEFAULT_PAGE_SIZE,
                size @ 1..=MAX_PAGE_SIZE => size,
                _ => {
                    violations.add(
                        "page_size",
                        format!("must be between 1 and {MAX_PAGE_SIZE}, or 0 for the default of {DEFAULT_PAGE_SIZE}"),
                    );
                    DEFAULT_PAGE_SIZE
                }
            };
            let after = if request.page_token.is_empty() {
                None
            } else {
                let key = PageKey::decode(&request.page_token);
                if key.is_none() {
                    violations.add("page_token", "is not a token this service issued");
                }
                key
            };
            ListBy::User {
                user_id: user_id.to_owned(),
                size,
                after,
            }
        }
        _ => {
            violations.add("order_id", "give exactly one of order_id and user_id");
            ListBy::Order(String::new())
        }
    };
    if matches!(by, ListBy::Order(_)) && !request.page_token.is_empty() {
        violations.add("page_token", "is only for listing a user's shipments");
    }
    violations.into_result("ListShipmentsRequest")?;
    Ok(by)
}

/// Validates `MarkShipped`: the shipment id and a tracking number of 1 to
/// 64 printable characters.
pub fn validate_mark_shipped(request: &MarkShippedRequest) -> Result<(String, String), Status> {
    let mut violations = Violations::new();
    check_id(
        &mut violations,
        "shipment_id",
        &request.shipment_id,
        MAX_ID_CHARS,
    );
    let tracking = request.tracking_number.trim();
    let chars = tracking.chars().count();
    if chars == 0 || chars > MAX_TRACKING_CHARS {
        violations.add(
            "tracking_number",
            format!("must be 1 to {MAX_TRACKING_CHARS} characters (got {chars})"),
        );
    } else if tracking.chars().any(char::is_control) {
        violations.add("tracking_number", "must not contain control characters");
    }
    violations.into_result("MarkShippedRequest")?;
    Ok((request.shipment_id.trim().to_owned(), tracking.to_owned()))
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn confirmed(order_id: &str, sequence: u64) -> Vec<u8> {
        OrderConfirmed {
            order_id: order_id.into(),
            user_id: "u_1".into(),
            lines: vec![OrderLine {
                sku: "WIDGET-1".into(),
                quantity: 2,
                unit_price_cents: 150,
            }],
            total_cents: 300,
            currency: "EUR".into(),
            sequence,
            ..OrderConfirmed::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn events_decode_into_typed_values() {
        let event = decode_event(event_types::CONFIRMED, "ord_1", &confirmed("ord_1", 1))
            .unwrap()
            .unwrap();
        assert_eq!(
            event,
            OrderEvent::Confirmed {
                order_id: "ord_1".into(),
                user_id: "u_1".into(),
                lines: vec![Line {
                    sku: "WIDGET-1".into(),
                    quantity: 2
                }],
                sequence: 1,
            }
        );
        let cancelled = OrderCancelled {
            order_id: "ord_1".into(),
            sequence: 2,
            ..OrderCancelled::default()
        }
        .encode_to_vec();
        assert_eq!(
            decode_event(event_types::CANCELLED, "ord_1", &cancelled).unwrap(),
            Some(OrderEvent::Cancelled {
                order_id: "ord_1".into(),
                sequence: 2
            })
        );
        assert_eq!(
            decode_event("mesh.events.v1.Unknown", "x", b"").unwrap(),
            None
        );
    }

    #[test]
    fn events_that_break_the_contract_say_why() {
        for (body, subject, reason) in [
            (
                confirmed("ord_1", 0),
                "ord_1",
                "sequence must be at least 1",
            ),
            (
                confirmed("ord_1", 1),
                "ord_2",
                "differs from the event's subject",
            ),
            (confirmed("", 1), "", "order_id must be 1 to 128"),
            (vec![0xff, 0xff], "ord_1", "does not decode"),
        ] {
            let error = decode_event(event_types::CONFIRMED, subject, &body).unwrap_err();
            assert!(error.contains(reason), "{error} should say {reason}");
        }
    }

    #[test]
    fn one_shipment_id_per_order() {
        assert_eq!(shipment_id_for("ord_1"), shipment_id_for("ord_1"));
        assert_ne!(shipment_id_for("ord_1"), shipment_id_for("ord_2"));
        assert!(shipment_id_for("ord_1").starts_with("shp_"));
    }

    #[test]
    fn cancelling_cancels_or_asks_for_a_return() {
        assert_eq!(
            ShipmentStatus::Pending.after_cancel(),
            ShipmentStatus::Cancelled
        );
        assert_eq!(
            ShipmentStatus::Shipped.after_cancel(),
            ShipmentStatus::ReturnRequested
        );
        assert_eq!(
            ShipmentStatus::Cancelled.after_cancel(),
            ShipmentStatus::Cancelled
        );
    }

    #[test]
    fn list_needs_exactly_one_of_order_and_user() {
        let both = ListShipmentsRequest {
            order_id: "o".into(),
            user_id: "u".into(),
            ..Default::default()
        };
        let status = validate_list(&both).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status
            .message()
            .contains("exactly one of order_id and user_id"));
        assert!(validate_list(&ListShipmentsRequest::default()).is_err());
        let by_user = validate_list(&ListShipmentsRequest {
            user_id: "u_1".into(),
            page_size: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            by_user,
            ListBy::User {
                user_id: "u_1".into(),
                size: 2,
                after: None
            }
        );
        let key = PageKey {
            created_at_unix_ms: 5,
            shipment_id: shipment_id_for("o"),
        };
        assert_eq!(PageKey::decode(&key.encode()), Some(key));
        assert_eq!(PageKey::decode("zz"), None);
    }

    #[test]
    fn tracking_numbers_are_bounded() {
        let request = |tracking: &str| MarkShippedRequest {
            shipment_id: "shp_1".into(),
            tracking_number: tracking.into(),
        };
        assert!(validate_mark_shipped(&request("1Z999")).is_ok());
        for bad in ["", &"9".repeat(65), "a\nb"] {
            assert!(validate_mark_shipped(&request(bad)).is_err(), "{bad:?}");
        }
    }
}
