//! Pure rules: what a valid request is, and whether a charge is captured or
//! declined. No I/O here.

use mesh::{
    proto::payments::v1::{self as proto, ChargeRequest},
    validate::{check_id, Violations},
};
use tonic::Status;

/// Longest accepted idempotency key, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest accepted user id, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;
/// Longest accepted payment id, in characters.
pub const MAX_PAYMENT_ID_CHARS: usize = 128;

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// The money was taken.
    Captured,
    /// The charge was refused; nothing was taken.
    Declined,
    /// The money was given back.
    Refunded,
}

impl PaymentStatus {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Captured => "CAPTURED",
            PaymentStatus::Declined => "DECLINED",
            PaymentStatus::Refunded => "REFUNDED",
        }
    }

    /// Parses a `status` column value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "CAPTURED" => Some(PaymentStatus::Captured),
            "DECLINED" => Some(PaymentStatus::Declined),
            "REFUNDED" => Some(PaymentStatus::Refunded),
            _ => None,
        }
    }

    /// The protobuf enum.
    pub fn to_proto(self) -> proto::PaymentStatus {
        match self {
            PaymentStatus::Captured => proto::PaymentStatus::Captured,
            PaymentStatus::Declined => proto::PaymentStatus::Declined,
            PaymentStatus::Refunded => proto::PaymentStatus::Refunded,
        }
    }
}

/// A validated charge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// 1..=128 characters chosen by the caller.
    pub idempotency_key: String,
    /// Who pays.
    pub user_id: String,
    /// Positive.
    pub amount_cents: i64,
    /// Three upper-case ASCII letters.
    pub currency: String,
}

/// What the issuer says about a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Take the money.
    Capture,
    /// Refuse, for this reason.
    Decline(String),
}

impl Decision {
    /// The status recorded for this decision.
    pub fn status(&self) -> PaymentStatus {
        match self {
            Decision::Capture => PaymentStatus::Captured,
            Decision::Decline(_) => PaymentStatus::Declined,
        }
    }

    /// The decline reason, empty for a capture.
    pub fn reason(&self) -> &str {
        match self {
            Decision::Capture => "",
            Decision::Decline(reason) => reason,
        }
    }
}

/// The deterministic decline rule: an amount above `limit_cents` is declined.
pub fn decide(amount_cents: i64, limit_cents: i64) -> Decision {
    if amount_cents > limit_cents {
        Decision::Decline(format!(
            "amount {amount_cents} exceeds the limit of {limit_cents}"
        ))
    } else {
        Decision::Capture
    }
}

/// The decline limit of each currency: amounts are only comparable within
/// one currency, so each has its own limit, and currencies not listed share
/// the default one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclineLimits {
    /// The limit of a currency not in `per_currency`, in cents.
    pub default_cents: i64,
    /// Upper-case ISO 4217 code → limit in that currency's cents.
    pub per_currency: std::collections::BTreeMap<String, i64>,
}

impl DeclineLimits {
    /// One limit for every currency.
    pub fn uniform(default_cents: i64) -> Self {
        Self {
            default_cents,
            per_currency: Default::default(),
        }
    }

    /// The limit of `currency` (upper case).
    pub fn limit_for(&self, currency: &str) -> i64 {
        self.per_currency
            .get(currency)
            .copied()
            .unwrap_or(self.default_cents)
    }

    /// What the issuer decides for `amount_cents` in `currency`.
    pub fn decide(&self, amount_cents: i64, currency: &str) -> Decision {
        decide(amount_cents, self.limit_for(currency))
    }
}

/// Parses one `CUR=CENTS` per-currency limit (a flag value).
pub fn parse_currency_limit(text: &str) -> Result<(String, i64), String> {
    let (currency, cents) = text
        .split_once('=')
        .ok_or_else(|| format!("expected CUR=CENTS such as USD=120000, got {text:?}"))?;
    let currency = normalize_currency(currency.trim())
        .ok_or_else(|| format!("{currency:?} is not a 3-letter ISO 4217 code"))?;
    let cents: i64 = cents
        .trim()
        .parse()
        .map_err(|_| format!("{cents:?} is not a whole number of cents"))?;
    if cents < 0 {
        return Err(format!("the limit of {currency} must not be negative"));
    }
    Ok((currency, cents))
}

/// `currency` upper-cased, if it is three ASCII letters.
pub fn normalize_currency(currency: &str) -> Option<String> {
    (currency.len() == 3 && currency.bytes().all(|byte| byte.is_ascii_alphabetic()))
        .then(|| currency.to_ascii_uppercase())
}

/// Validates a `ChargeRequest`, naming every bad field.
pub fn validate_charge(request: &ChargeRequest) -> Result<Charge, Status> {
    let mut violations = Violations::new();
    let key_chars = request.idempotency_key.chars().count();
    if key_chars == 0 {
        violations.add("idempotency_key", "must not be empty");
    } else if key_chars > MAX_KEY_CHARS {
        violations.add(
            "idempotency_key",
            format!("must be at most {MAX_KEY_CHARS} characters (got {key_chars})"),
        );
    }
    check_id(
        &mut violations,
        "user_id",
        &request.user_id,
        MAX_USER_ID_CHARS,
    );
    if request.amount_cents <= 0 {
        violations.add(
            "amount_cents",
            format!("must be greater than 0 (got {})", request.amount_cents),
        );
    }
    let currency = normalize_currency(&request.currency);
    if currency.is_none() {
        violations.add(
            "currency",
            format!(
                "must be a 3-letter ISO 4217 code such as EUR (got {:?})",
                request.currency
            ),
        );
    }
    violations.into_result("ChargeRequest")?;
    Ok(Charge {
        idempotency_key: request.idempotency_key.clone(),
        user_id: request.user_id.clone(),
        amount_cents: request.amount_cents,
        currency: currency.unwrap_or_default(),
    })
}

/// Validates the `payment_id` of a `request` (e.g. "RefundRequest").
pub fn validate_payment_id(request: &str, payment_id: &str) -> Result<(), Status> {
    let mut violations = Violations::new();
    check_id(
        &mut violations,
        "payment_id",
        payment_id,
        MAX_PAYMENT_ID_CHARS,
    );
    violations.into_result(request)
}

/// A new payment id: `pay_` and a time-ordered UUID (version 7), so that
/// new payments are appended to the primary key's B-tree (ADR 0026).
pub fn new_payment_id() -> String {
    format!("pay_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn request(key: &str, user: &str, amount: i64, currency: &str) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: key.into(),
            user_id: user.into(),
            amount_cents: amount,
            currency: currency.into(),
        }
    }

    #[test]
    fn a_valid_charge_is_accepted_and_its_currency_upper_cased() {
        let charge = validate_charge(&request("k1", "u_1", 1250, "eur")).unwrap();
        assert_eq!(
            charge,
            Charge {
                idempotency_key: "k1".into(),
                user_id: "u_1".into(),
                amount_cents: 1250,
                currency: "EUR".into(),
            }
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let status = validate_charge(&request("", " ", 0, "EURO")).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let message = status.message();
        assert!(
            message.contains("idempotency_key: must not be empty"),
            "{message}"
        );
        assert!(message.contains("user_id: must not be empty"), "{message}");
        assert!(
            message.contains("amount_cents: must be greater than 0 (got 0)"),
            "{message}"
        );
        assert!(
            message.contains("currency: must be a 3-letter ISO 4217 code"),
            "{message}"
        );
    }

    #[test]
    fn key_length_is_bounded_in_characters_not_bytes() {
        let at_limit = "é".repeat(MAX_KEY_CHARS);
        assert!(validate_charge(&request(&at_limit, "u", 1, "EUR")).is_ok());
        let over = "k".repeat(MAX_KEY_CHARS + 1);
        let status = validate_charge(&request(&over, "u", 1, "EUR")).unwrap_err();
        assert!(
            status
                .message()
                .contains("idempotency_key: must be at most 128 characters (got 129)"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn negative_amounts_and_non_letter_currencies_are_rejected() {
        assert!(validate_charge(&request("k", "u", -5, "EUR")).is_err());
        assert!(validate_charge(&request("k", "u", 5, "E1R")).is_err());
        assert!(validate_charge(&request("k", "u", 5, "ÉUR")).is_err());
        assert!(validate_charge(&request("k", "u", 5, "")).is_err());
    }

    #[test]
    fn decline_rule_is_strictly_above_the_limit() {
        assert_eq!(decide(100_000, 100_000), Decision::Capture);
        let declined = decide(150_000, 100_000);
        assert_eq!(declined.status(), PaymentStatus::Declined);
        assert_eq!(
            declined.reason(),
            "amount 150000 exceeds the limit of 100000"
        );
        assert_eq!(Decision::Capture.reason(), "");
    }

    #[test]
    fn statuses_round_trip_through_their_column_values() {
        for status in [
            PaymentStatus::Captured,
            PaymentStatus::Declined,
            PaymentStatus::Refunded,
        ] {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(PaymentStatus::parse("captured"), None);
    }

    #[test]
    fn payment_ids_must_be_present() {
        let status = validate_payment_id("RefundRequest", "").unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid RefundRequest: payment_id: must not be empty"
        );
        assert!(validate_payment_id("RefundRequest", "pay_1").is_ok());
        assert!(new_payment_id().starts_with("pay_"));
        let (first, second) = (new_payment_id(), new_payment_id());
        assert!(first < second, "time-ordered (ADR 0026): {first} {second}");
    }

    #[test]
    fn each_currency_has_its_own_limit() {
        let mut limits = DeclineLimits::uniform(1000);
        let (currency, cents) = parse_currency_limit("jpy=50").unwrap();
        limits.per_currency.insert(currency, cents);
        assert_eq!(limits.decide(900, "EUR"), Decision::Capture);
        assert_eq!(limits.decide(900, "JPY").status(), PaymentStatus::Declined);
        assert_eq!(limits.decide(50, "JPY"), Decision::Capture);
        assert!(parse_currency_limit("EUR").is_err());
        assert!(parse_currency_limit("EURO=5").is_err());
        assert!(parse_currency_limit("EUR=-5").is_err());
    }
}
