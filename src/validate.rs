//! Request validation: collects every field violation of a request and turns
//! them into one `INVALID_ARGUMENT` status whose message names each field, with
//! the same list as `google.rpc.BadRequest` details for programs.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The field violations found in one request.
#[derive(Debug, Default)]
pub struct Violations {
    fields: Vec<(String, String)>,
}

impl Violations {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is invalid, with a description a person understands.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.fields.push((field.into(), description.into()));
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
        let message = format!(
            "invalid {request}: {}",
            self.fields
                .iter()
                .map(|(field, description)| format!("{field}: {description}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let mut details = ErrorDetails::new();
        for (field, description) in self.fields {
            details.add_bad_request_violation(field, description);
        }
        Err(Status::with_error_details(
            Code::InvalidArgument,
            message,
            details,
        ))
    }
}

#[cfg(test)]
mod tests {
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
}
