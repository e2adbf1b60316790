//! The inventory service's rules, free of I/O: request validation into typed
//! values (every violation named with words a person understands), the
//! reservation state machine, what counts as "the same items", shortages and
//! totals.

use std::{collections::HashSet, fmt};

use mesh::{
    bounded::{Detail, ProblemList},
    proto::inventory::v1::{
        AddStockRequest, CommitRequest, GetItemRequest, GetReservationRequest, ReleaseRequest,
        ReservationState, ReserveRequest, RestockRequest,
    },
    validate::Violations,
};
use tonic::{Code, Status};

/// Longest SKU, in characters.
pub const MAX_SKU_CHARS: usize = 64;
/// Longest reservation id, in characters.
pub const MAX_RESERVATION_ID_CHARS: usize = 128;
/// Most lines one reservation may have: the same limit as an order's.
pub const MAX_LINES: usize = mesh::validate::MAX_ORDER_LINES;
/// The currency of a price whose request names none.
pub const DEFAULT_CURRENCY: &str = "EUR";
/// Most units one SKU may hold (available + reserved), and so the most one
/// AddStock or one reservation line may ask for.
pub const MAX_STOCK: i64 = 1_000_000_000_000;
/// Highest unit price, in cents (ten million currency units).
pub const MAX_UNIT_PRICE_CENTS: i64 = 1_000_000_000;

/// A validated `AddStock` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockAddition {
    /// The SKU, created if new.
    pub sku: String,
    /// Units to add (> 0).
    pub quantity: i64,
    /// The new unit price (> 0).
    pub unit_price_cents: i64,
    /// The price's currency (upper-case ISO 4217).
    pub currency: String,
}

/// One line of a reservation request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Line {
    /// The SKU.
    pub sku: String,
    /// Units asked for (> 0).
    pub quantity: i64,
}

/// A validated `Reserve` request: lines in the caller's order, SKUs unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRequest {
    /// Chosen by the caller; the idempotency key.
    pub reservation_id: String,
    /// The lines, in the caller's order.
    pub lines: Vec<Line>,
    /// How long it may hold stock, as asked (0: the server's default).
    pub ttl_ms: i64,
    /// The currency every price must be in; empty: any one currency.
    pub currency: String,
}

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Holding stock.
    Reserved,
    /// Stock given back.
    Released,
    /// Stock sold.
    Committed,
    /// Sold, then the units went back to stock (a cancelled sale).
    Restocked,
}

/// What a Release or Commit does to a reservation in a given state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Move it (and its stock).
    Apply,
    /// It is already there: answer it unchanged.
    AlreadyDone,
    /// It can no longer get there: FAILED_PRECONDITION.
    Refuse,
}

/// A line that cannot be reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    /// The SKU.
    pub sku: String,
    /// Units asked for.
    pub asked: i64,
    /// Units available now; `None` when the SKU is unknown.
    pub available: Option<i64>,
}

impl State {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Released => "RELEASED",
            Self::Committed => "COMMITTED",
            Self::Restocked => "RESTOCKED",
        }
    }

    /// Reads [`State::as_str`]'s text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "RESERVED" => Some(Self::Reserved),
            "RELEASED" => Some(Self::Released),
            "COMMITTED" => Some(Self::Committed),
            "RESTOCKED" => Some(Self::Restocked),
            _ => None,
        }
    }

    /// The wire enum.
    pub fn to_proto(self) -> ReservationState {
        match self {
            Self::Reserved => ReservationState::Reserved,
            Self::Released => ReservationState::Released,
            Self::Committed => ReservationState::Committed,
            Self::Restocked => ReservationState::Restocked,
        }
    }

    /// Lower-case words for messages ("committed").
    pub fn words(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Released => "released",
            Self::Committed => "committed",
            Self::Restocked => "restocked",
        }
    }

    /// What Release does from this state: RESERVED → RELEASED, RELEASED
    /// stays (idempotent), COMMITTED cannot be released.
    pub fn on_release(self) -> Transition {
        match self {
            Self::Reserved => Transition::Apply,
            Self::Released => Transition::AlreadyDone,
            Self::Committed | Self::Restocked => Transition::Refuse,
        }
    }

    /// What Commit does from this state: RESERVED → COMMITTED, COMMITTED
    /// stays (idempotent), RELEASED cannot be committed.
    pub fn on_commit(self) -> Transition {
        match self {
            Self::Reserved => Transition::Apply,
            Self::Committed => Transition::AlreadyDone,
            Self::Released | Self::Restocked => Transition::Refuse,
        }
    }

    /// What Restock does from this state: COMMITTED → RESTOCKED, RESTOCKED
    /// stays (idempotent), a reservation never sold cannot be restocked.
    pub fn on_restock(self) -> Transition {
        match self {
            Self::Committed => Transition::Apply,
            Self::Restocked => Transition::AlreadyDone,
            Self::Reserved | Self::Released => Transition::Refuse,
        }
    }
}

impl fmt::Display for Shortage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.available {
            Some(available) => write!(
                f,
                "{} (asked {}, available {available})",
                self.sku, self.asked
            ),
            None => write!(f, "{} (unknown sku)", self.sku),
        }
    }
}

/// The short lines as one bounded FAILED_PRECONDITION: "insufficient stock:
/// WIDGET-1 (asked 5, available 2); GADGET-9 (unknown sku)", one
/// `PreconditionFailure` violation per named line (`INSUFFICIENT_STOCK` or
/// `UNKNOWN_SKU`, the SKU); past what one status holds they are counted.
pub fn shortage_problems(shortages: &[Shortage]) -> ProblemList {
    let mut problems = ProblemList::new(Code::FailedPrecondition, "insufficient stock");
    for shortage in shortages {
        let text = shortage.to_string();
        let kind = if shortage.available.is_some() {
            "INSUFFICIENT_STOCK"
        } else {
            "UNKNOWN_SKU"
        };
        problems.add(
            &text,
            Detail::Precondition {
                kind,
                subject: &shortage.sku,
                description: &text,
            },
        );
    }
    problems
}

/// The message of [`shortage_problems`].
pub fn shortage_message(shortages: &[Shortage]) -> String {
    shortage_problems(shortages).message()
}

/// Whether two reservations ask for the same items: the same SKUs with the
/// same quantities, in any order.
pub fn same_items(a: &[Line], b: &[Line]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// The one currency of a reservation's items (`(sku, currency)` pairs), which
/// must be `expected` unless that is empty; otherwise a message naming them.
pub fn one_currency(items: &[(String, String)], expected: &str) -> Result<String, String> {
    let mut currencies: Vec<&str> = items.iter().map(|(_, c)| c.as_str()).collect();
    currencies.sort_unstable();
    currencies.dedup();
    let listing = || {
        items
            .iter()
            .take(10)
            .map(|(sku, currency)| format!("{sku} ({currency})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match currencies.as_slice() {
        [one] if expected.is_empty() || *one == expected => Ok((*one).to_owned()),
        [one] => Err(format!(
            "the items are priced in {one}, not in {expected}: {}",
            listing()
        )),
        _ => Err(format!(
            "the items are priced in different currencies ({}): {}; order them separately",
            currencies.join(", "),
            listing()
        )),
    }
}

/// Σ quantity × unit price, or `None` if it does not fit in an i64.
pub fn total_cents(lines: impl IntoIterator<Item = (i64, i64)>) -> Option<i64> {
    lines
        .into_iter()
        .try_fold(0i64, |total, (quantity, price)| {
            total.checked_add(quantity.checked_mul(price)?)
        })
}

/// Checks a SKU: 1..=64 characters of A–Z, a–z, 0–9, '.', '_', '-'.
pub fn check_sku(sku: &str) -> Result<(), String> {
    if sku.is_empty() {
        return Err("must not be empty".into());
    }
    if sku.chars().count() > MAX_SKU_CHARS {
        return Err(format!("must be at most {MAX_SKU_CHARS} characters"));
    }
    if !sku
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may only contain letters A-Z or a-z, digits, '.', '_' and '-'".into());
    }
    Ok(())
}

/// Checks a reservation id: 1..=128 characters, no control characters.
pub fn check_reservation_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.chars().count() > MAX_RESERVATION_ID_CHARS {
        return Err(format!(
            "must be at most {MAX_RESERVATION_ID_CHARS} characters"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Validates `AddStock`.
pub fn validate_add_stock(request: &AddStockRequest) -> Result<StockAddition, Status> {
    let mut violations = Violations::new();
    if let Err(problem) = check_sku(&request.sku) {
        violations.add("sku", problem);
    }
    check_quantity(&mut violations, "quantity", request.quantity);
    if request.unit_price_cents <= 0 {
        violations.add("unit_price_cents", "must be greater than 0");
    } else if request.unit_price_cents > MAX_UNIT_PRICE_CENTS {
        violations.add(
            "unit_price_cents",
            format!("must be at most {MAX_UNIT_PRICE_CENTS}"),
        );
    }
    let currency = currency_or_default(&mut violations, &request.currency);
    violations.into_result("AddStockRequest")?;
    Ok(StockAddition {
        sku: request.sku.clone(),
        quantity: request.quantity,
        unit_price_cents: request.unit_price_cents,
        currency,
    })
}

/// Validates `GetItem`: returns the SKU.
pub fn validate_get_item(request: &GetItemRequest) -> Result<String, Status> {
    let mut violations = Violations::new();
    if let Err(problem) = check_sku(&request.sku) {
        violations.add("sku", problem);
    }
    violations.into_result("GetItemRequest")?;
    Ok(request.sku.clone())
}

/// Validates `Reserve`: a reservation id, 1..=100 lines, each with a valid
/// SKU and a positive quantity, no SKU twice.
pub fn validate_reserve(request: &ReserveRequest) -> Result<ReservationRequest, Status> {
    let mut violations = Violations::new();
    if let Err(problem) = check_reservation_id(&request.reservation_id) {
        violations.add("reservation_id", problem);
    }
    if request.items.is_empty() {
        violations.add("items", "must have at least one line");
    } else if request.items.len() > MAX_LINES {
        violations.add(
            "items",
            format!(
                "must have at most {MAX_LINES} lines (got {})",
                request.items.len()
            ),
        );
    }
    if request.ttl_ms < 0 {
        violations.add(
            "ttl_ms",
            "must not be negative (0 means the server's default)",
        );
    }
    let currency = if request.currency.is_empty() {
        String::new()
    } else {
        currency_or_default(&mut violations, &request.currency)
    };
    let mut seen = HashSet::new();
    for (index, item) in request.items.iter().enumerate().take(MAX_LINES) {
        if violations.is_full() {
            break;
        }
        match check_sku(&item.sku) {
            Err(problem) => violations.add(format!("items[{index}].sku"), problem),
            Ok(()) if !seen.insert(item.sku.as_str()) => violations.add(
                format!("items[{index}].sku"),
                format!(
                    "{} appears more than once; put its whole quantity on one line",
                    item.sku
                ),
            ),
            Ok(()) => {}
        }
        check_quantity(
            &mut violations,
            &format!("items[{index}].quantity"),
            item.quantity,
        );
    }
    violations.into_result("ReserveRequest")?;
    Ok(ReservationRequest {
        reservation_id: request.reservation_id.clone(),
        lines: request
            .items
            .iter()
            .map(|item| Line {
                sku: item.sku.clone(),
                quantity: item.quantity,
            })
            .collect(),
        ttl_ms: request.ttl_ms,
        currency,
    })
}

/// Validates `Restock`: returns the reservation id.
pub fn validate_restock(request: &RestockRequest) -> Result<String, Status> {
    validate_reservation_id(&request.reservation_id, "RestockRequest")
}

/// Upper-case ISO 4217 code of `currency`, empty meaning
/// [`DEFAULT_CURRENCY`]; a violation if it is not three letters.
fn currency_or_default(violations: &mut Violations, currency: &str) -> String {
    if currency.is_empty() {
        return DEFAULT_CURRENCY.to_owned();
    }
    if currency.len() == 3 && currency.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        return currency.to_ascii_uppercase();
    }
    violations.add(
        "currency",
        "must be a 3-letter ISO 4217 code such as EUR, or empty for EUR",
    );
    String::new()
}

/// Validates `Release`: returns the reservation id.
pub fn validate_release(request: &ReleaseRequest) -> Result<String, Status> {
    validate_reservation_id(&request.reservation_id, "ReleaseRequest")
}

/// Validates `GetReservation`: returns the reservation id.
pub fn validate_get_reservation(request: &GetReservationRequest) -> Result<String, Status> {
    validate_reservation_id(&request.reservation_id, "GetReservationRequest")
}

/// Validates `Commit`: returns the reservation id.
pub fn validate_commit(request: &CommitRequest) -> Result<String, Status> {
    validate_reservation_id(&request.reservation_id, "CommitRequest")
}

fn validate_reservation_id(id: &str, request: &str) -> Result<String, Status> {
    let mut violations = Violations::new();
    if let Err(problem) = check_reservation_id(id) {
        violations.add("reservation_id", problem);
    }
    violations.into_result(request)?;
    Ok(id.to_owned())
}

fn check_quantity(violations: &mut Violations, field: &str, quantity: i64) {
    if quantity <= 0 {
        violations.add(field, "must be greater than 0");
    } else if quantity > MAX_STOCK {
        violations.add(field, format!("must be at most {MAX_STOCK}"));
    }
}

#[cfg(test)]
mod tests {
    use mesh::proto::inventory::v1::LineItem;
    use tonic::Code;

    use super::*;

    fn line(sku: &str, quantity: i64) -> LineItem {
        LineItem {
            sku: sku.into(),
            quantity,
        }
    }

    fn reserve(id: &str, items: Vec<LineItem>) -> Result<ReservationRequest, Status> {
        validate_reserve(&ReserveRequest {
            reservation_id: id.into(),
            items,
            ..ReserveRequest::default()
        })
    }

    #[test]
    fn skus_are_1_to_64_safe_characters() {
        for good in ["A", "WIDGET-1", "a.b_c-9", &"x".repeat(64)] {
            assert_eq!(check_sku(good), Ok(()), "{good}");
        }
        assert!(check_sku("").unwrap_err().contains("empty"));
        assert!(check_sku(&"x".repeat(65))
            .unwrap_err()
            .contains("at most 64"));
        for bad in ["WIDGET 1", "a/b", "é", "a;DROP", " A"] {
            assert!(
                check_sku(bad).unwrap_err().contains("may only contain"),
                "{bad}"
            );
        }
    }

    #[test]
    fn add_stock_needs_positive_quantity_and_price() {
        let ok = validate_add_stock(&AddStockRequest {
            sku: "W-1".into(),
            quantity: 5,
            unit_price_cents: 250,
            currency: String::new(),
        })
        .unwrap();
        assert_eq!(
            ok,
            StockAddition {
                sku: "W-1".into(),
                quantity: 5,
                unit_price_cents: 250,
                currency: "EUR".into(),
            }
        );
        let status = validate_add_stock(&AddStockRequest {
            sku: "bad sku".into(),
            quantity: 0,
            unit_price_cents: -1,
            currency: String::new(),
        })
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid AddStockRequest: sku: may only contain letters A-Z or a-z, digits, '.', '_' and '-'; \
             quantity: must be greater than 0; unit_price_cents: must be greater than 0"
        );
        let status = validate_add_stock(&AddStockRequest {
            sku: "W".into(),
            quantity: i64::MAX,
            unit_price_cents: i64::MAX,
            currency: String::new(),
        })
        .unwrap_err();
        assert!(status.message().contains("quantity: must be at most"));
        assert!(status
            .message()
            .contains("unit_price_cents: must be at most"));
    }

    #[test]
    fn reserve_validates_every_line_and_keeps_the_callers_order() {
        let ok = reserve("r1", vec![line("B", 2), line("A", 1)]).unwrap();
        assert_eq!(ok.reservation_id, "r1");
        assert_eq!(
            ok.lines,
            vec![
                Line {
                    sku: "B".into(),
                    quantity: 2
                },
                Line {
                    sku: "A".into(),
                    quantity: 1
                }
            ]
        );

        let status = reserve("", vec![line("A", 0), line("", 1), line("A", -3)]).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid ReserveRequest: reservation_id: must not be empty; \
             items[0].quantity: must be greater than 0; items[1].sku: must not be empty; \
             items[2].sku: A appears more than once; put its whole quantity on one line; \
             items[2].quantity: must be greater than 0"
        );
    }

    #[test]
    fn reserve_needs_lines_and_a_bounded_id() {
        let status = reserve("r1", vec![]).unwrap_err();
        assert!(status
            .message()
            .contains("items: must have at least one line"));
        let status = reserve(&"r".repeat(129), vec![line("A", 1)]).unwrap_err();
        assert!(status
            .message()
            .contains("reservation_id: must be at most 128"));
        assert!(reserve(&"r".repeat(128), vec![line("A", 1)]).is_ok());
        let status = reserve("r\n1", vec![line("A", 1)]).unwrap_err();
        assert!(status.message().contains("control characters"));
        let many = (0..=MAX_LINES).map(|i| line(&format!("S{i}"), 1)).collect();
        let status = reserve("r1", many).unwrap_err();
        assert!(status.message().contains("at most 100 lines (got 101)"));
    }

    #[test]
    fn release_and_commit_need_an_id() {
        let status = validate_release(&ReleaseRequest {
            reservation_id: String::new(),
        })
        .unwrap_err();
        assert_eq!(
            status.message(),
            "invalid ReleaseRequest: reservation_id: must not be empty"
        );
        assert_eq!(
            validate_commit(&CommitRequest {
                reservation_id: "r1".into()
            })
            .unwrap(),
            "r1"
        );
    }

    #[test]
    fn the_state_machine_is_idempotent_and_final() {
        use State::*;
        use Transition::*;
        assert_eq!(Reserved.on_release(), Apply);
        assert_eq!(Released.on_release(), AlreadyDone);
        assert_eq!(Committed.on_release(), Refuse);
        assert_eq!(Reserved.on_commit(), Apply);
        assert_eq!(Committed.on_commit(), AlreadyDone);
        assert_eq!(Released.on_commit(), Refuse);
        for state in [Reserved, Released, Committed] {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        assert_eq!(State::parse("reserved"), None);
        assert_eq!(Committed.to_proto(), ReservationState::Committed);
    }

    #[test]
    fn same_items_ignores_order_but_not_quantities_or_skus() {
        let l = |sku: &str, quantity| Line {
            sku: sku.into(),
            quantity,
        };
        assert!(same_items(&[l("A", 1), l("B", 2)], &[l("B", 2), l("A", 1)]));
        assert!(!same_items(&[l("A", 1)], &[l("A", 2)]));
        assert!(!same_items(&[l("A", 1)], &[l("A", 1), l("B", 1)]));
        assert!(!same_items(&[l("A", 1)], &[l("C", 1)]));
    }

    #[test]
    fn shortages_read_like_a_sentence() {
        let message = shortage_message(&[
            Shortage {
                sku: "WIDGET-1".into(),
                asked: 5,
                available: Some(2),
            },
            Shortage {
                sku: "GADGET-9".into(),
                asked: 1,
                available: None,
            },
        ]);
        assert_eq!(
            message,
            "insufficient stock: WIDGET-1 (asked 5, available 2); GADGET-9 (unknown sku)"
        );
    }

    #[test]
    fn totals_are_checked_for_overflow() {
        assert_eq!(total_cents([(2, 250), (1, 1000)]), Some(1500));
        assert_eq!(total_cents([]), Some(0));
        assert_eq!(total_cents([(MAX_STOCK, MAX_UNIT_PRICE_CENTS)]), None);
        assert_eq!(total_cents([(i64::MAX, 1), (1, 1)]), None);
    }
}
