//! Request validation: collects every field violation of a request and turns
//! them into one `INVALID_ARGUMENT` status whose message names each field, with
//! the same list as `google.rpc.BadRequest` details for programs.

use tonic::{Code, Status};

use crate::bounded::{Detail, ProblemList};

/// Most lines one order (and so one inventory reservation) may have: the one
/// limit orders and inventory both enforce.
pub const MAX_ORDER_LINES: usize = 100;

/// Most violations one status names; further ones are only counted, so an
/// error message stays small whatever the request's size.
pub const MAX_VIOLATIONS: usize = crate::bounded::MAX_LISTED;

/// The field violations found in one request: the first ones that fit one
/// bounded status ([`crate::bounded::ProblemList`]); the rest are counted.
#[derive(Debug, Default)]
pub struct Violations {
    fields: Vec<(String, String)>,
    more: usize,
}

impl Violations {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is invalid, with a description a person understands.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.is_full() {
            self.more += 1;
            return;
        }
        self.fields.push((field.into(), description.into()));
    }

    /// Whether the list is full: validation of a long request may stop here.
    pub fn is_full(&self) -> bool {
        self.fields.len() >= MAX_VIOLATIONS
    }

    /// Records a violation of `field` unless `ok`.
    pub fn require(&mut self, ok: bool, field: &str, description: &str) {
        if !ok {
            self.add(field, description);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// `Ok(())` when nothing was recorded, otherwise `INVALID_ARGUMENT`
    /// "invalid <request>: field: description; …".
    pub fn into_result(self, request: &str) -> Result<(), Status> {
        if self.fields.is_empty() {
            return Ok(());
        }
        Err(self.into_status(request))
    }

    /// The `INVALID_ARGUMENT` status of the violations recorded so far (for
    /// a caller that knows there is at least one), with the same list as
    /// `google.rpc.BadRequest` details.
    pub fn into_status(self, request: &str) -> Status {
        let mut problems = ProblemList::new(Code::InvalidArgument, &format!("invalid {request}"));
        for (field, description) in &self.fields {
            problems.add(
                &format!("{field}: {description}"),
                Detail::Field { field, description },
            );
        }
        problems.count_unlisted(self.more);
        problems.into_status()
    }
}

/// Records a violation of the id in `field` when it is blank or longer than
/// `max_chars` characters.
pub fn check_id(violations: &mut Violations, field: &str, value: &str, max_chars: usize) {
    let chars = value.chars().count();
    if value.trim().is_empty() {
        violations.add(field, "must not be empty");
    } else if chars > max_chars {
        violations.add(
            field,
            format!("must be at most {max_chars} characters (got {chars})"),
        );
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn no_violations_is_ok() {
        assert!(Violations::new().into_result("X").is_ok());
    }

    #[test]
    fn names_every_field_in_the_message_and_details() {
        let mut violations = Violations::new();
        violations.require(false, "email", "must contain '@'");
        violations.require(true, "ignored", "never shown");
        violations.add("display_name", "must not be empty");
        let status = violations.into_result("CreateUserRequest").unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid CreateUserRequest: email: must contain '@'; display_name: must not be empty"
        );
        let bad_request = status
            .get_details_bad_request()
            .expect("BadRequest details");
        assert_eq!(bad_request.field_violations.len(), 2);
        assert_eq!(bad_request.field_violations[0].field, "email");
    }

    #[test]
    fn a_huge_request_gives_a_small_status() {
        let mut violations = Violations::new();
        for index in 0..2_000_000 {
            if violations.is_full() {
                violations.add("items", "one more");
                break;
            }
            violations.add(format!("items[{index}].sku"), "x".repeat(10_000));
        }
        let status = violations.into_result("PlaceOrderRequest").unwrap_err();
        assert!(
            status.message().len() <= crate::limits::MAX_STATUS_MESSAGE_BYTES,
            "{}",
            status.message().len()
        );
        // 21 found; as many listed as fit, each description cut.
        assert!(
            status.message().contains("at least 18 more"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("xxx…"), "{}", status.message());
        // The details repeat the message's violations: bounded too.
        assert!(
            status.details().len() <= crate::limits::MAX_STATUS_DETAILS_BYTES,
            "{}",
            status.details().len()
        );
        let listed = status.get_details_bad_request().expect("details");
        assert_eq!(listed.field_violations.len(), 3);
    }

    #[test]
    fn twenty_short_violations_are_all_listed() {
        let mut violations = Violations::new();
        for index in 0..25 {
            violations.add(format!("items[{index}].quantity"), "must be greater than 0");
        }
        let status = violations.into_result("PlaceOrderRequest").unwrap_err();
        assert!(
            status
                .message()
                .ends_with("; (stopped after 20 problems, at least 5 more)"),
            "{}",
            status.message()
        );
        let listed = status.get_details_bad_request().expect("details");
        assert_eq!(listed.field_violations.len(), 20);
    }

    #[test]
    fn ids_must_be_present_and_bounded() {
        let mut violations = Violations::new();
        check_id(&mut violations, "ok", "ord_1", 8);
        assert!(violations.is_empty());
        check_id(&mut violations, "blank", "  ", 8);
        check_id(&mut violations, "long", "ééééééééé", 8);
        let status = violations.into_result("R").unwrap_err();
        assert_eq!(
            status.message(),
            "invalid R: blank: must not be empty; long: must be at most 8 characters (got 9)"
        );
    }
}
