//! Edge authentication and the per-method access rules.
//!
//! - [`keys`]: JWKS and PEM verification keys, algorithm pinned per key;
//! - [`verify`]: bearer tokens → the caller's subject, keys re-read when
//!   their files change;
//! - [`dev`]: the local mesh's signing key and `mesh token`.
//!
//! The rules come from each method's `mesh.gateway.v1.access` option:
//! public methods need no token (a token, if sent, must still be valid);
//! every other method needs one; `subject_field` must equal the subject.

pub mod dev;
pub mod keys;
pub mod verify;

use prost_reflect::{DynamicMessage, Value};

pub use verify::{AuthError, Authenticator, Subject, TokenRules};

use crate::api::Access;

/// Who is calling, after the access rules: `None` for an anonymous call of a
/// public method.
pub fn authenticate(
    authenticator: &Authenticator,
    access: &Access,
    authorization: Option<&http::HeaderValue>,
) -> Result<Option<Subject>, AuthError> {
    match (access.public, authorization) {
        (true, None) => Ok(None),
        (_, header) => authenticator.verify_header(header).map(Some),
    }
}

/// Why the subject may not make this call (a 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be the caller's own id ({subject:?}), not {value:?}")]
pub struct NotYours {
    /// The request field.
    pub field: String,
    /// The caller.
    pub subject: String,
    /// What the request asked for (bounded).
    pub value: String,
}

/// Checks the method's `subject_field` against the caller.
pub fn check_subject(
    access: &Access,
    request: &DynamicMessage,
    subject: Option<&Subject>,
) -> Result<(), NotYours> {
    let (Some(path), Some(Subject(subject))) = (&access.subject_field, subject) else {
        return Ok(());
    };
    let mut message = request.clone();
    let mut value = String::new();
    for (index, field) in path.iter().enumerate() {
        let current = message.get_field(field).into_owned();
        if index + 1 == path.len() {
            if let Value::String(text) = current {
                value = text;
            }
        } else if let Value::Message(inner) = current {
            message = inner;
        }
    }
    if value.trim() == subject {
        return Ok(());
    }
    Err(NotYours {
        field: path
            .iter()
            .map(|field| field.json_name())
            .collect::<Vec<_>>()
            .join("."),
        subject: subject.clone(),
        value: crate::bounded(&value),
    })
}

#[cfg(test)]
mod tests;
