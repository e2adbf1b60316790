//! Pure rules of the orders service: request validation, the order status
//! machine, the ids the saga derives from a `request_id`, page tokens, and how
//! an upstream failure is classified. No I/O here.

use std::collections::HashSet;

use mesh::{
    proto::orders::v1::{self as proto, ListOrdersRequest, PlaceOrderRequest},
    validate::{check_id, Violations},
};
use tonic::{Code, Status};

/// Longest accepted `request_id`, in characters.
pub const MAX_REQUEST_ID_CHARS: usize = 128;
/// Longest accepted id (user, order) or SKU, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// `ListOrders` page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest `ListOrders` page.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Most lines one order may have (the same limit inventory enforces).
pub const MAX_LINES: usize = mesh::validate::MAX_ORDER_LINES;
/// Rejection reasons starting with this answer INVALID_ARGUMENT (the order
/// itself is wrong, e.g. its items' currencies), the others FAILED_PRECONDITION.
pub const INVALID_ORDER_PREFIX: &str = "invalid order: ";

/// Where an order is in its life, as callers see it.
///
/// ```text
///   (new) ──► PENDING ──► CONFIRMED ──CancelOrder──► CANCELLING ──► CANCELLED
///                │
///                └──────► REJECTED
/// ```
/// PENDING and CANCELLING are the states the saga works in (its finer
/// [`Step`] says where); CONFIRMED, REJECTED and CANCELLED are final for the
/// saga (CONFIRMED only leaves through CancelOrder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// The saga has not finished (a repeat of PlaceOrder resumes it).
    Pending,
    /// Stock committed and payment captured.
    Confirmed,
    /// Not placed: out of stock, payment declined…; nothing is held.
    Rejected,
    /// Confirmed, then cancelled: refunded and restocked.
    Cancelled,
    /// CancelOrder accepted; refund and restock in progress.
    Cancelling,
}

impl OrderStatus {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Cancelling => "CANCELLING",
        }
    }

    /// Whether the saga still has work to do on an order in this status.
    pub fn is_unfinished(self) -> bool {
        matches!(self, OrderStatus::Pending | OrderStatus::Cancelling)
    }

    /// Parses a `status` column value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "PENDING" => Some(OrderStatus::Pending),
            "CONFIRMED" => Some(OrderStatus::Confirmed),
            "REJECTED" => Some(OrderStatus::Rejected),
            "CANCELLED" => Some(OrderStatus::Cancelled),
            "CANCELLING" => Some(OrderStatus::Cancelling),
            _ => None,
        }
    }

    /// The protobuf enum.
    pub fn to_proto(self) -> proto::OrderStatus {
        match self {
            OrderStatus::Pending => proto::OrderStatus::Pending,
            OrderStatus::Confirmed => proto::OrderStatus::Confirmed,
            OrderStatus::Rejected => proto::OrderStatus::Rejected,
            OrderStatus::Cancelled => proto::OrderStatus::Cancelled,
            OrderStatus::Cancelling => proto::OrderStatus::Cancelling,
        }
    }

    /// What `CancelOrder` does from this status.
    pub fn on_cancel(self) -> CancelStep {
        match self {
            OrderStatus::Confirmed | OrderStatus::Cancelling => CancelStep::RefundThenCancel,
            OrderStatus::Cancelled => CancelStep::AlreadyCancelled,
            OrderStatus::Pending | OrderStatus::Rejected => CancelStep::Refuse,
        }
    }
}

/// What `CancelOrder` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStep {
    /// Record CANCELLING, refund the payment and restock, then CANCELLED.
    RefundThenCancel,
    /// Nothing: return the order as it is (idempotent).
    AlreadyCancelled,
    /// FAILED_PRECONDITION naming the status.
    Refuse,
}

/// Where the saga is inside PENDING or CANCELLING. Each step is persisted
/// BEFORE the remote calls it allows, so it names everything that may have
/// happened outside orders (the state machine is in [`crate::saga`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A reservation `reservation_id(request_id, attempt)` may exist.
    Reserve,
    /// Reserved and priced (total and currency frozen); a charge under
    /// `charge_key(request_id)` may exist.
    Charge,
    /// The charge is captured (payment_id known); the reservation is held.
    Commit,
    /// Rejecting (the reason is stored): refund the payment if captured,
    /// release the reservation.
    Undo,
    /// Cancelling a confirmed order: refund the payment, restock the units.
    Cancel,
    /// Nothing left to do: the status is final.
    Done,
}

impl Step {
    /// The value stored in the `step` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Reserve => "RESERVE",
            Step::Charge => "CHARGE",
            Step::Commit => "COMMIT",
            Step::Undo => "UNDO",
            Step::Cancel => "CANCEL",
            Step::Done => "DONE",
        }
    }

    /// Parses a `step` column value.
    pub fn parse(value: &str) -> Option<Self> {
        [
            Step::Reserve,
            Step::Charge,
            Step::Commit,
            Step::Undo,
            Step::Cancel,
            Step::Done,
        ]
        .into_iter()
        .find(|step| step.as_str() == value)
    }

    /// Whether a charge may exist once the order is at this step (the
    /// reservation must then not be released before the charge's outcome is
    /// known).
    pub fn charge_may_exist(self) -> bool {
        !matches!(self, Step::Reserve)
    }
}

/// One requested line: a SKU and a positive quantity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    /// The SKU.
    pub sku: String,
    /// How many.
    pub quantity: i64,
}

/// A validated `PlaceOrderRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    /// The caller's idempotency key.
    pub request_id: String,
    /// Who orders.
    pub user_id: String,
    /// Non-empty, distinct SKUs, in the caller's order.
    pub items: Vec<Item>,
    /// Upper-case ISO 4217 code the caller expects, or empty: the seller's.
    pub currency: String,
}

impl PlaceOrder {
    /// Whether the stored order (`user_id`, `currency`, `items`) is the one
    /// this request asks for: same user and lines (in any line order), and
    /// the same currency if this request names one.
    pub fn same_order(&self, user_id: &str, currency: &str, items: &[Item]) -> bool {
        let mut mine = self.items.clone();
        let mut theirs = items.to_vec();
        mine.sort();
        theirs.sort();
        self.user_id == user_id
            && (self.currency.is_empty() || self.currency == currency)
            && mine == theirs
    }
}

/// Validates a `PlaceOrderRequest`, naming its bad fields (the first
/// [`mesh::validate::MAX_VIOLATIONS`]; a request over [`MAX_LINES`] lines is
/// refused without looking at its lines). Ids are trimmed.
pub fn validate_place_order(request: &PlaceOrderRequest) -> Result<PlaceOrder, Status> {
    let mut violations = Violations::new();
    if request.items.len() > MAX_LINES {
        violations.add(
            "items",
            format!(
                "must have at most {MAX_LINES} lines (got {}); split the order",
                request.items.len()
            ),
        );
        return Err(violations.into_status("PlaceOrderRequest"));
    }
    check_id(
        &mut violations,
        "request_id",
        &request.request_id,
        MAX_REQUEST_ID_CHARS,
    );
    check_id(&mut violations, "user_id", &request.user_id, MAX_ID_CHARS);
    if request.items.is_empty() {
        violations.add("items", "must contain at least one line");
    }
    let mut seen = HashSet::new();
    for (index, line) in request.items.iter().enumerate() {
        if violations.is_full() {
            break;
        }
        let field = format!("items[{index}]");
        check_id(
            &mut violations,
            &format!("{field}.sku"),
            &line.sku,
            MAX_ID_CHARS,
        );
        if line.quantity <= 0 {
            violations.add(
                format!("{field}.quantity"),
                format!("must be greater than 0 (got {})", line.quantity),
            );
        }
        if !line.sku.is_empty() && !seen.insert(line.sku.as_str()) {
            violations.add(
                format!("{field}.sku"),
                format!(
                    "{} appears more than once; put the whole quantity on one line",
                    line.sku
                ),
            );
        }
    }
    let currency = if request.currency.is_empty() {
        Some(String::new())
    } else {
        normalize_currency(&request.currency)
    };
    if currency.is_none() {
        violations.add(
            "currency",
            "must be a 3-letter ISO 4217 code such as EUR, or empty for the seller's currency",
        );
    }
    violations.into_result("PlaceOrderRequest")?;
    Ok(PlaceOrder {
        request_id: request.request_id.trim().to_owned(),
        user_id: request.user_id.trim().to_owned(),
        items: request
            .items
            .iter()
            .map(|line| Item {
                sku: line.sku.trim().to_owned(),
                quantity: line.quantity,
            })
            .collect(),
        currency: currency.unwrap_or_default(),
    })
}

/// `currency` upper-cased, if it is three ASCII letters.
pub fn normalize_currency(currency: &str) -> Option<String> {
    (currency.len() == 3 && currency.bytes().all(|byte| byte.is_ascii_alphabetic()))
        .then(|| currency.to_ascii_uppercase())
}

/// Validates the `order_id` of `request` (e.g. "GetOrderRequest").
pub fn validate_order_id(request: &str, order_id: &str) -> Result<(), Status> {
    let mut violations = Violations::new();
    check_id(&mut violations, "order_id", order_id, MAX_ID_CHARS);
    violations.into_result(request)
}

/// A validated `ListOrdersRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Whose orders.
    pub user_id: String,
    /// 1..=100.
    pub page_size: u32,
    /// Start after this order (exclusive); `None` for the first page.
    pub after: Option<PageKey>,
}

/// Validates a `ListOrdersRequest`.
pub fn validate_list(request: &ListOrdersRequest) -> Result<ListQuery, Status> {
    let mut violations = Violations::new();
    check_id(&mut violations, "user_id", &request.user_id, MAX_ID_CHARS);
    let page_size = page_size(&mut violations, request.page_size);
    let after = page_token(&mut violations, &request.page_token);
    violations.into_result("ListOrdersRequest")?;
    Ok(ListQuery {
        user_id: request.user_id.clone(),
        page_size,
        after,
    })
}

/// `page_size` 0 → the default, 1..=100 as is, else a violation.
fn page_size(violations: &mut Violations, page_size: i32) -> u32 {
    match page_size {
        0 => DEFAULT_PAGE_SIZE,
        size if (1..=MAX_PAGE_SIZE as i32).contains(&size) => size as u32,
        size => {
            violations.add(
                "page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE}, or 0 for {DEFAULT_PAGE_SIZE} (got {size})"),
            );
            DEFAULT_PAGE_SIZE
        }
    }
}

/// The key in a `page_token` (empty: the first page), else a violation.
fn page_token(violations: &mut Violations, token: &str) -> Option<PageKey> {
    if token.is_empty() {
        return None;
    }
    let key = PageKey::decode(token);
    if key.is_none() {
        violations.add("page_token", "is not a token this service issued");
    }
    key
}

/// Longest note an operator gives ResolveParkedOrder, in characters.
pub const MAX_NOTE_CHARS: usize = 500;

/// A validated `ListParkedOrdersRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedQuery {
    /// 1..=100.
    pub page_size: u32,
    /// Start after this order (its `created_at` holds the parked time).
    pub after: Option<PageKey>,
}

/// Validates a `ListParkedOrdersRequest`.
pub fn validate_list_parked(
    request: &proto::ListParkedOrdersRequest,
) -> Result<ParkedQuery, Status> {
    let mut violations = Violations::new();
    let page_size = page_size(&mut violations, request.page_size);
    let after = page_token(&mut violations, &request.page_token);
    violations.into_result("ListParkedOrdersRequest")?;
    Ok(ParkedQuery { page_size, after })
}

/// A validated `ResolveParkedOrderRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The order.
    pub order_id: String,
    /// CONFIRMED, REJECTED or CANCELLED.
    pub status: OrderStatus,
    /// What the operator did.
    pub note: String,
}

/// Validates a `ResolveParkedOrderRequest`.
pub fn validate_resolve(request: &proto::ResolveParkedOrderRequest) -> Result<Resolution, Status> {
    let mut violations = Violations::new();
    check_id(&mut violations, "order_id", &request.order_id, MAX_ID_CHARS);
    let status = match proto::OrderStatus::try_from(request.status) {
        Ok(proto::OrderStatus::Confirmed) => Some(OrderStatus::Confirmed),
        Ok(proto::OrderStatus::Rejected) => Some(OrderStatus::Rejected),
        Ok(proto::OrderStatus::Cancelled) => Some(OrderStatus::Cancelled),
        _ => {
            violations.add(
                "status",
                "must be ORDER_STATUS_CONFIRMED, ORDER_STATUS_REJECTED or ORDER_STATUS_CANCELLED",
            );
            None
        }
    };
    check_id(&mut violations, "note", &request.note, MAX_NOTE_CHARS);
    violations.into_result("ResolveParkedOrderRequest")?;
    Ok(Resolution {
        order_id: request.order_id.trim().to_owned(),
        status: status.unwrap_or(OrderStatus::Rejected),
        note: request.note.trim().to_owned(),
    })
}

/// The position of an order in a user's newest-first list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKey {
    /// The order's creation time.
    pub created_at_unix_ms: i64,
    /// The order's id (breaks ties between orders of one millisecond).
    pub order_id: String,
}

impl PageKey {
    const PREFIX: &'static str = "o1:";

    /// An opaque token: hex of `o1:<created_at>:<order_id>`.
    pub fn encode(&self) -> String {
        let plain = format!(
            "{}{}:{}",
            Self::PREFIX,
            self.created_at_unix_ms,
            self.order_id
        );
        plain.bytes().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The key in `token`, or `None` if this service did not issue it.
    pub fn decode(token: &str) -> Option<Self> {
        if token.len() % 2 != 0
            || token.len() > 2 * (Self::PREFIX.len() + 20 + 1 + MAX_ID_CHARS * 4)
        {
            return None;
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(token.get(at..at + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let plain = String::from_utf8(bytes).ok()?;
        let rest = plain.strip_prefix(Self::PREFIX)?;
        let (created, order_id) = rest.split_once(':')?;
        let created_at_unix_ms = created.parse().ok()?;
        (!order_id.is_empty()).then(|| PageKey {
            created_at_unix_ms,
            order_id: order_id.to_owned(),
        })
    }
}

/// A new order id: `ord_` and a time-ordered UUID (version 7: 48 bits of
/// milliseconds, then 74 random bits). Made when the order row is first
/// written; the saga's idempotency keys derive from it. Ids made one after
/// another sort one after another, so the index entries keyed by them here
/// (the order, its lines, its outbox lease), and the reservation and the
/// charge keyed by them in inventory and payments, are appended to their
/// B-trees instead of each landing on a page of its own: a commit writes
/// fewer pages (ADR 0026).
pub fn new_order_id() -> String {
    format!("ord_{}", uuid::Uuid::now_v7().simple())
}

/// Where an order's idempotency keys come from (column `saga_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The order's own random id: every order recorded since migration 0004.
    /// A request resent after orders' database was lost makes a new order
    /// with new keys, never the old order's payment or reservation.
    OrderId,
    /// The caller's `request_id`: orders recorded before, whose keys must
    /// stay what they were (a charge in flight keeps its key).
    RequestId,
}

impl KeySource {
    /// The value stored in the `saga_keys` column.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::OrderId => "order_id",
            KeySource::RequestId => "request_id",
        }
    }

    /// Parses a `saga_keys` column value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "order_id" => Some(KeySource::OrderId),
            "request_id" => Some(KeySource::RequestId),
            _ => None,
        }
    }
}

/// The payments idempotency key of the order `order_id`: the same for every
/// attempt, so a resumed saga never charges twice.
pub fn order_charge_key(order_id: &str) -> String {
    format!("order:{order_id}")
}

/// The inventory reservation id of the order `order_id`, `attempt`
/// counting the reservations released before it (0 for the first).
pub fn order_reservation_id(order_id: &str, attempt: i64) -> String {
    if attempt == 0 {
        format!("order:{order_id}")
    } else {
        format!("order:{order_id}:{attempt}")
    }
}

/// The payments idempotency key of an order, by where its keys come from.
pub fn charge_key_of(keys: KeySource, order_id: &str, request_id: &str) -> String {
    match keys {
        KeySource::OrderId => order_charge_key(order_id),
        KeySource::RequestId => charge_key(request_id),
    }
}

/// The inventory reservation id `attempt` of an order, by where its keys
/// come from.
pub fn reservation_id_of(
    keys: KeySource,
    order_id: &str,
    request_id: &str,
    attempt: i64,
) -> String {
    match keys {
        KeySource::OrderId => order_reservation_id(order_id, attempt),
        KeySource::RequestId => reservation_id(request_id, attempt),
    }
}

/// The namespace of the ids derived from a `request_id` (UUID v5), so the
/// derived ids have a fixed length whatever the request id's.
const SAGA_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d65_7368_2d6f_7264_6572_732d_7361_6761);

fn request_digest(request_id: &str) -> String {
    uuid::Uuid::new_v5(&SAGA_NAMESPACE, request_id.as_bytes())
        .simple()
        .to_string()
}

/// The payments idempotency key of an order recorded before migration 0004
/// ([`KeySource::RequestId`]): derived from its `request_id`.
pub fn charge_key(request_id: &str) -> String {
    format!("order:{}", request_digest(request_id))
}

/// The inventory reservation id of an order recorded before migration 0004
/// ([`KeySource::RequestId`]), `attempt` counting the reservations released
/// before it (0 for the first).
pub fn reservation_id(request_id: &str, attempt: i64) -> String {
    let digest = request_digest(request_id);
    if attempt == 0 {
        format!("order:{digest}")
    } else {
        format!("order:{digest}:{attempt}")
    }
}

/// Why the saga parked an order for a person: upstream state that
/// contradicts what the saga did. Counted by kind in the
/// `orders_parked` metric and shown by `mesh status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParkReason {
    /// A reservation is in a state the saga did not put it in.
    ReservationState,
    /// A reservation's lines or total are not the order's.
    ReservationContent,
    /// A payment is in a state the saga did not put it in.
    PaymentState,
    /// Inventory refused a step the saga cannot do without (commit after
    /// the charge, release, restock).
    InventoryRefused,
    /// Payments refused a refund.
    PaymentsRefused,
}

impl ParkReason {
    /// Every kind, in a stable order.
    pub const ALL: [ParkReason; 5] = [
        ParkReason::ReservationState,
        ParkReason::ReservationContent,
        ParkReason::PaymentState,
        ParkReason::InventoryRefused,
        ParkReason::PaymentsRefused,
    ];

    /// The value stored in `parked_reason` and used as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::ReservationState => "reservation_state",
            ParkReason::ReservationContent => "reservation_content",
            ParkReason::PaymentState => "payment_state",
            ParkReason::InventoryRefused => "inventory_refused",
            ParkReason::PaymentsRefused => "payments_refused",
        }
    }

    /// Parses a `parked_reason` column value.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == value)
    }
}

/// Longest rejection reason kept, in bytes: with "order rejected: " in
/// front it is still a status message every mesh client reads.
pub const MAX_REASON_BYTES: usize = 1536;

/// `reason` cut to [`MAX_REASON_BYTES`] (reasons quote upstream answers).
pub fn bounded_reason(reason: &str) -> String {
    mesh::bounded::cut(reason, MAX_REASON_BYTES)
}

/// The rejection reason for inventory's refusal to reserve the items
/// (`code` is FAILED_PRECONDITION, NOT_FOUND or INVALID_ARGUMENT), bounded.
pub fn stock_rejection_reason(code: Code, message: &str) -> String {
    bounded_reason(&match code {
        Code::InvalidArgument => format!("{INVALID_ORDER_PREFIX}{message}"),
        Code::FailedPrecondition
            if message
                .to_ascii_lowercase()
                .starts_with("insufficient stock") =>
        {
            message.to_owned()
        }
        Code::FailedPrecondition => format!("insufficient stock: {message}"),
        Code::NotFound => format!("unknown item: {message}"),
        _ => format!("inventory refused the items: {message}"),
    })
}

/// How a call that did not return a result ended, as far as its effect goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The server answered "no" for a reason a retry will not change
    /// (INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS,
    /// OUT_OF_RANGE): the call had no effect.
    Refused,
    /// The call provably had no effect, but a later attempt may succeed:
    /// the connection was refused (the request was never sent), HTTP/2
    /// REFUSED_STREAM, or the server declined it before running it
    /// (UNIMPLEMENTED, UNAUTHENTICATED, PERMISSION_DENIED).
    NotApplied,
    /// The call may or may not have had its effect (timeouts, cancellations,
    /// a connection lost mid-call, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED, …).
    Unknown,
}

/// Classifies `status`, the error of an upstream call. The only place that
/// decides whether a failed Charge may have taken money.
pub fn classify_failure(status: &Status) -> CallFailure {
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::OutOfRange => CallFailure::Refused,
        Code::Unimplemented | Code::Unauthenticated | Code::PermissionDenied => {
            CallFailure::NotApplied
        }
        Code::Unavailable if never_sent(status) => CallFailure::NotApplied,
        _ => CallFailure::Unknown,
    }
}

/// Whether `status` proves the request never reached a server: the mesh
/// client's verdict (connection refused, no healthy endpoint, REFUSED_STREAM
/// in its cause chain), or tonic's own connect error for a fixed address.
fn never_sent(status: &Status) -> bool {
    if mesh::client::never_reached_server_status(status) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    // tonic maps REFUSED_STREAM to UNAVAILABLE with this text.
    status.message().contains("refused stream")
}

#[cfg(test)]
mod tests {
    use mesh::proto::orders::v1::OrderLine;

    use super::*;

    fn line(sku: &str, quantity: i64) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            quantity,
            unit_price_cents: 0,
        }
    }

    fn place(items: Vec<OrderLine>, currency: &str) -> PlaceOrderRequest {
        PlaceOrderRequest {
            request_id: "r1".into(),
            user_id: "u_1".into(),
            items,
            currency: currency.into(),
        }
    }

    #[test]
    fn a_valid_order_leaves_the_currency_to_the_seller_and_upper_cases_one_given() {
        let order = validate_place_order(&place(vec![line("apple", 2)], "")).unwrap();
        assert_eq!(order.currency, "");
        assert_eq!(
            order.items,
            vec![Item {
                sku: "apple".into(),
                quantity: 2
            }]
        );
        let order = validate_place_order(&place(vec![line("apple", 2)], "usd")).unwrap();
        assert_eq!(order.currency, "USD");
    }

    #[test]
    fn ids_are_trimmed() {
        let mut request = place(vec![line(" apple ", 2)], "");
        request.user_id = "  u_1 ".into();
        request.request_id = " r1\t".into();
        let order = validate_place_order(&request).unwrap();
        assert_eq!(
            (order.user_id.as_str(), order.request_id.as_str()),
            ("u_1", "r1")
        );
        assert_eq!(order.items[0].sku, "apple");
    }

    #[test]
    fn more_than_100_lines_are_refused_without_looking_at_them() {
        let ok = validate_place_order(&place(vec![line("a", 1); 1], "")).is_ok();
        assert!(ok);
        let lines: Vec<OrderLine> = (0..MAX_LINES).map(|i| line(&format!("s{i}"), 1)).collect();
        assert!(validate_place_order(&place(lines, "")).is_ok());
        let huge = vec![OrderLine::default(); 2_000_000];
        let status = validate_place_order(&place(huge, "")).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid PlaceOrderRequest: items: must have at most 100 lines (got 2000000); split the order"
        );
    }

    #[test]
    fn validation_stops_after_a_bounded_number_of_violations() {
        let lines = vec![OrderLine::default(); MAX_LINES];
        let status = validate_place_order(&place(lines, "")).unwrap_err();
        assert!(status.message().len() < 4096, "{}", status.message());
        assert!(status.message().contains("stopped after 20 problems"));
    }

    #[test]
    fn every_bad_field_of_an_order_is_named() {
        let request = PlaceOrderRequest {
            request_id: "x".repeat(129),
            user_id: "".into(),
            items: vec![line("a", 0), line("", 1), line("b", 1), line("b", 2)],
            currency: "EU".into(),
        };
        let status = validate_place_order(&request).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let message = status.message();
        for expected in [
            "request_id: must be at most 128 characters (got 129)",
            "user_id: must not be empty",
            "items[0].quantity: must be greater than 0 (got 0)",
            "items[1].sku: must not be empty",
            "items[3].sku: b appears more than once",
            "currency: must be a 3-letter ISO 4217 code",
        ] {
            assert!(
                message.contains(expected),
                "{expected:?} missing: {message}"
            );
        }
        let empty = validate_place_order(&place(vec![], "EUR")).unwrap_err();
        assert!(empty
            .message()
            .contains("items: must contain at least one line"));
    }

    #[test]
    fn same_order_ignores_line_order_but_not_content() {
        let order = validate_place_order(&place(vec![line("a", 1), line("b", 2)], "EUR")).unwrap();
        let swapped = vec![
            Item {
                sku: "b".into(),
                quantity: 2,
            },
            Item {
                sku: "a".into(),
                quantity: 1,
            },
        ];
        assert!(order.same_order("u_1", "EUR", &swapped));
        assert!(!order.same_order("u_2", "EUR", &swapped));
        assert!(!order.same_order("u_1", "USD", &swapped));
        assert!(!order.same_order("u_1", "EUR", &swapped[..1]));
    }

    #[test]
    fn status_machine_for_cancel() {
        assert_eq!(
            OrderStatus::Confirmed.on_cancel(),
            CancelStep::RefundThenCancel
        );
        assert_eq!(
            OrderStatus::Cancelled.on_cancel(),
            CancelStep::AlreadyCancelled
        );
        assert_eq!(OrderStatus::Pending.on_cancel(), CancelStep::Refuse);
        assert_eq!(OrderStatus::Rejected.on_cancel(), CancelStep::Refuse);
        for status in [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Rejected,
            OrderStatus::Cancelled,
        ] {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn list_requests_default_bound_and_check_their_token() {
        let query = validate_list(&ListOrdersRequest {
            user_id: "u".into(),
            page_size: 0,
            page_token: String::new(),
        })
        .unwrap();
        assert_eq!(query.page_size, 20);
        assert_eq!(query.after, None);
        for bad in [-1, 101] {
            let status = validate_list(&ListOrdersRequest {
                user_id: "u".into(),
                page_size: bad,
                page_token: String::new(),
            })
            .unwrap_err();
            assert!(status
                .message()
                .contains("page_size: must be between 1 and 100"));
        }
        let status = validate_list(&ListOrdersRequest {
            user_id: String::new(),
            page_size: 5,
            page_token: "zz".into(),
        })
        .unwrap_err();
        assert!(status.message().contains("user_id: must not be empty"));
        assert!(status
            .message()
            .contains("page_token: is not a token this service issued"));
    }

    #[test]
    fn page_tokens_round_trip_and_reject_forgeries() {
        let key = PageKey {
            created_at_unix_ms: 1_700_000_000_123,
            order_id: "ord_abc".into(),
        };
        let token = key.encode();
        assert_eq!(PageKey::decode(&token), Some(key));
        assert_eq!(PageKey::decode("abc"), None);
        assert_eq!(PageKey::decode("zz"), None);
        let foreign: String = "x1:5:o".bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(PageKey::decode(&foreign), None);
        let no_id: String = "o1:5:".bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(PageKey::decode(&no_id), None);
        assert_eq!(PageKey::decode("é1"), None);
    }

    #[test]
    fn derived_ids_are_deterministic_bounded_and_distinct() {
        let long = "r".repeat(128);
        assert_eq!(charge_key(&long), charge_key(&long));
        assert!(charge_key(&long).len() <= 64);
        assert_ne!(charge_key("a"), charge_key("b"));
        assert_eq!(reservation_id("a", 0), reservation_id("a", 0));
        assert_ne!(reservation_id("a", 0), reservation_id("a", 1));
        assert_ne!(reservation_id("a", 1), reservation_id("b", 1));
    }

    /// ADR 0026: ids made one after another sort one after another (so
    /// their index entries are appended), and keep the `ord_` + 32 hex form.
    #[test]
    fn order_ids_are_time_ordered() {
        let ids: Vec<String> = (0..1_000).map(|_| new_order_id()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
        let hex = ids[0].strip_prefix("ord_").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert!(order_charge_key(&ids[0]) < order_charge_key(&ids[1]));
    }

    /// Hardening finding 4: keys derived from the order's own random id
    /// differ for two orders of one `request_id` (a resend after orders'
    /// database was lost), and never look like the older request-derived keys.
    #[test]
    fn keys_from_the_order_id_are_per_order_and_apart_from_the_old_ones() {
        let (first, second) = (new_order_id(), new_order_id());
        assert_ne!(order_charge_key(&first), order_charge_key(&second));
        assert_ne!(
            order_reservation_id(&first, 0),
            order_reservation_id(&second, 0)
        );
        assert_ne!(
            order_reservation_id(&first, 0),
            order_reservation_id(&first, 1)
        );
        assert!(order_reservation_id(&first, 99).len() <= 64);
        assert!(order_charge_key(&first).starts_with("order:ord_"));
        assert!(!charge_key("r1").starts_with("order:ord_"));
        for source in [KeySource::OrderId, KeySource::RequestId] {
            assert_eq!(KeySource::parse(source.as_str()), Some(source));
        }
        for reason in ParkReason::ALL {
            assert_eq!(ParkReason::parse(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn stock_reasons_read_well() {
        assert_eq!(
            stock_rejection_reason(
                Code::FailedPrecondition,
                "sku apple: 1 available, 5 requested"
            ),
            "insufficient stock: sku apple: 1 available, 5 requested"
        );
        assert_eq!(
            stock_rejection_reason(Code::FailedPrecondition, "insufficient stock: apple"),
            "insufficient stock: apple"
        );
        assert_eq!(
            stock_rejection_reason(Code::NotFound, "sku pear not found"),
            "unknown item: sku pear not found"
        );
    }

    #[test]
    fn failures_are_classified_by_what_they_prove() {
        assert_eq!(
            classify_failure(&Status::invalid_argument("x")),
            CallFailure::Refused
        );
        assert_eq!(
            classify_failure(&Status::failed_precondition("x")),
            CallFailure::Refused
        );
        assert_eq!(
            classify_failure(&Status::unimplemented("x")),
            CallFailure::NotApplied
        );
        // A bare UNAVAILABLE may come from a connection lost mid-call.
        assert_eq!(
            classify_failure(&Status::unavailable("connection reset")),
            CallFailure::Unknown
        );
        assert_eq!(
            classify_failure(&Status::deadline_exceeded("x")),
            CallFailure::Unknown
        );
        assert_eq!(
            classify_failure(&Status::cancelled("Timeout expired")),
            CallFailure::Unknown
        );
        assert_eq!(
            classify_failure(&Status::internal("x")),
            CallFailure::Unknown
        );
        // What tonic makes of a refused connection.
        let refused = Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ))));
        assert_eq!(refused.code(), Code::Unavailable);
        assert_eq!(classify_failure(&refused), CallFailure::NotApplied);
    }

    #[tokio::test]
    async fn a_refused_connection_through_a_real_channel_is_not_applied() {
        // A port nobody listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let channel = mesh::client::direct(
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect_lazy(),
        );
        let mut client = mesh::proto::payments::v1::payments_client::PaymentsClient::new(channel);
        let status = client
            .get_payment(mesh::proto::payments::v1::GetPaymentRequest {
                payment_id: "pay_1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(
            classify_failure(&status),
            CallFailure::NotApplied,
            "{status:?}"
        );
    }
}
