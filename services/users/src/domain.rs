//! The users service's rules, free of I/O: every request is validated into a
//! typed value here, and every violation is reported with words a person
//! understands (`INVALID_ARGUMENT` naming the field).

use mesh::{
    proto::users::v1::{CreateUserRequest, GetUserRequest, ListUsersRequest},
    validate::Violations,
};
use tonic::Status;

/// Longest email address accepted (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest display name accepted, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// Longest user id looked up.
pub const MAX_USER_ID_CHARS: usize = 128;
/// The page size used when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// The largest page size a request may ask for.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The message of an invalid page token.
pub const BAD_PAGE_TOKEN: &str = "page_token is not a token this service issued";

/// A validated `CreateUser` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Trimmed and lower-cased.
    pub email: String,
    /// Trimmed.
    pub display_name: String,
}

/// Where a page of `ListUsers` starts: after this key, in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKey {
    /// Creation time of the last user of the previous page.
    pub created_at_unix_ms: i64,
    /// Its id (breaks ties between users created in the same millisecond).
    pub user_id: String,
}

/// A validated `ListUsers` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many users to return at most (1..=1000).
    pub size: i64,
    /// `None` for the first page.
    pub after: Option<PageKey>,
}

/// A fresh user id: `u_` and a random UUID without dashes.
pub fn new_user_id() -> String {
    format!("u_{}", uuid::Uuid::new_v4().simple())
}

/// Validates `CreateUser`: the email is trimmed, lower-cased and checked; the
/// display name trimmed and checked.
pub fn validate_create(request: &CreateUserRequest) -> Result<NewUser, Status> {
    let mut violations = Violations::new();
    let email = normalize_email(&request.email).unwrap_or_else(|problem| {
        violations.add("email", problem);
        String::new()
    });
    let display_name = normalize_display_name(&request.display_name).unwrap_or_else(|problem| {
        violations.add("display_name", problem);
        String::new()
    });
    violations.into_result("CreateUserRequest")?;
    Ok(NewUser {
        email,
        display_name,
    })
}

/// Validates `GetUser`: returns the id to look up.
pub fn validate_get(request: &GetUserRequest) -> Result<String, Status> {
    let mut violations = Violations::new();
    let user_id = request.user_id.trim();
    if user_id.is_empty() {
        violations.add("user_id", "must not be empty");
    } else if user_id.chars().count() > MAX_USER_ID_CHARS {
        violations.add(
            "user_id",
            format!("must be at most {MAX_USER_ID_CHARS} characters"),
        );
    }
    violations.into_result("GetUserRequest")?;
    Ok(user_id.to_owned())
}

/// Validates `ListUsers`: page size 0 means the default, 1..=1000 as asked;
/// the page token must be one this service issued.
pub fn validate_list(request: &ListUsersRequest) -> Result<PageRequest, Status> {
    let mut violations = Violations::new();
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
        match PageKey::decode(&request.page_token) {
            Some(key) => Some(key),
            None => {
                violations.add("page_token", BAD_PAGE_TOKEN);
                None
            }
        }
    };
    violations.into_result("ListUsersRequest")?;
    Ok(PageRequest { size, after })
}

/// Trims and lower-cases `raw`, then checks it looks like an email address:
/// one '@', a non-empty local part, a domain with a dot, at most 254
/// characters, no spaces or control characters.
pub fn normalize_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("must not be empty".into());
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(format!("must be at most {MAX_EMAIL_CHARS} characters"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("must contain exactly one '@'".into());
    };
    if local.is_empty() {
        return Err("must have a name before the '@'".into());
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Err("must have a domain with a dot after the '@', like example.com".into());
    }
    Ok(email)
}

/// Trims `raw` and checks it is 1..=100 characters without control characters.
pub fn normalize_display_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(format!(
            "must be at most {MAX_DISPLAY_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters (such as new lines or tabs)".into());
    }
    Ok(name.to_owned())
}

impl PageKey {
    /// The opaque token handed to clients: hex of `<created_at>:<user_id>`.
    pub fn encode(&self) -> String {
        let plain = format!("{}:{}", self.created_at_unix_ms, self.user_id);
        plain.bytes().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Reads a token made by [`PageKey::encode`]; `None` for anything else.
    pub fn decode(token: &str) -> Option<Self> {
        if token.len() % 2 != 0 || token.len() > 2 * (20 + 1 + MAX_USER_ID_CHARS) {
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
        let (created, user_id) = plain.split_once(':')?;
        let created_at_unix_ms: i64 = created.parse().ok()?;
        let well_formed_id = user_id.len() > 2
            && user_id.starts_with("u_")
            && user_id[2..].bytes().all(|b| b.is_ascii_alphanumeric());
        (created_at_unix_ms >= 0 && well_formed_id).then(|| Self {
            created_at_unix_ms,
            user_id: user_id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn create(email: &str, display_name: &str) -> Result<NewUser, Status> {
        validate_create(&CreateUserRequest {
            email: email.into(),
            display_name: display_name.into(),
        })
    }

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        let user = create("  Ada.Lovelace@Example.COM \n", "  Ada  ").unwrap();
        assert_eq!(user.email, "ada.lovelace@example.com");
        assert_eq!(user.display_name, "Ada");
    }

    #[test]
    fn bad_emails_are_refused_with_a_reason() {
        for (email, reason) in [
            ("", "must not be empty"),
            ("   ", "must not be empty"),
            ("ada.example.com", "exactly one '@'"),
            ("a@b@example.com", "exactly one '@'"),
            ("@example.com", "a name before the '@'"),
            ("ada@localhost", "a domain with a dot"),
            ("ada@example.", "a domain with a dot"),
            ("ada@.com", "a domain with a dot"),
            ("ada@exa..mple.com", "a domain with a dot"),
            ("a da@example.com", "spaces or control characters"),
            ("ada\u{7}@example.com", "spaces or control characters"),
        ] {
            let problem = normalize_email(email).expect_err(email);
            assert!(
                problem.contains(reason),
                "{email:?}: {problem:?} should say {reason:?}"
            );
        }
    }

    #[test]
    fn email_length_limit_is_254_characters() {
        let domain = "@example.com";
        let fits = format!("{}{domain}", "a".repeat(MAX_EMAIL_CHARS - domain.len()));
        assert_eq!(normalize_email(&fits).unwrap().len(), 254);
        let too_long = format!("a{fits}");
        assert!(normalize_email(&too_long)
            .unwrap_err()
            .contains("at most 254"));
    }

    #[test]
    fn display_name_rules() {
        assert_eq!(
            normalize_display_name(" Grace Hopper ").unwrap(),
            "Grace Hopper"
        );
        assert_eq!(
            normalize_display_name(&"é".repeat(100))
                .unwrap()
                .chars()
                .count(),
            100
        );
        assert!(normalize_display_name(&"é".repeat(101))
            .unwrap_err()
            .contains("at most 100"));
        assert!(normalize_display_name(" \t ")
            .unwrap_err()
            .contains("empty"));
        assert!(normalize_display_name("Grace\nHopper")
            .unwrap_err()
            .contains("control characters"));
    }

    #[test]
    fn every_bad_field_is_named_in_one_invalid_argument() {
        let status = create("nope", "").unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid CreateUserRequest: email: must contain exactly one '@'; display_name: must not be empty"
        );
    }

    #[test]
    fn get_needs_an_id() {
        let status = validate_get(&GetUserRequest {
            user_id: " ".into(),
        })
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("user_id: must not be empty"));
        assert!(validate_get(&GetUserRequest {
            user_id: "x".repeat(129)
        })
        .is_err());
        assert_eq!(
            validate_get(&GetUserRequest {
                user_id: "u_1".into()
            })
            .unwrap(),
            "u_1"
        );
    }

    #[test]
    fn page_size_zero_is_the_default_and_out_of_range_is_refused() {
        let list = |page_size| {
            validate_list(&ListUsersRequest {
                page_size,
                page_token: String::new(),
            })
        };
        assert_eq!(list(0).unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(list(1).unwrap().size, 1);
        assert_eq!(list(1000).unwrap().size, 1000);
        for bad in [-1, 1001, i32::MIN, i32::MAX] {
            let status = list(bad).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status
                .message()
                .contains("page_size: must be between 1 and 1000"));
        }
    }

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        let key = PageKey {
            created_at_unix_ms: 1_700_000_000_123,
            user_id: new_user_id(),
        };
        let token = key.encode();
        assert!(!token.contains(&key.user_id), "the token is opaque");
        assert_eq!(PageKey::decode(&token), Some(key.clone()));
        let request = ListUsersRequest {
            page_size: 3,
            page_token: token,
        };
        assert_eq!(validate_list(&request).unwrap().after, Some(key));

        for bad in [
            "zz",
            "abc",
            "00",
            "3a75",
            "hello",
            "313a755f",
            "2d313a755f31",
        ] {
            assert_eq!(PageKey::decode(bad), None, "{bad}");
            let status = validate_list(&ListUsersRequest {
                page_size: 0,
                page_token: bad.into(),
            })
            .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().contains(BAD_PAGE_TOKEN), "{status:?}");
        }
        // Non-ASCII input must not panic on a char boundary.
        assert_eq!(PageKey::decode("éé"), None);
    }

    #[test]
    fn user_ids_are_prefixed_and_unique() {
        let a = new_user_id();
        let b = new_user_id();
        assert!(a.starts_with("u_") && a.len() == 34, "{a}");
        assert_ne!(a, b);
    }
}
