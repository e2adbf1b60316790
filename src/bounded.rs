//! Error text built from input, kept within what every mesh client accepts
//! ([`crate::limits`]). The one place where a status listing problems is
//! made — request validation's field violations ([`crate::validate`]),
//! inventory's shortages — and where any other text taken from input is cut
//! before it goes into a message, a stored reason or a log field.
//!
//! A [`ProblemList`] names its problems one after another in the message
//! and repeats them as `google.rpc` details, until the message or the
//! details would pass their bound or [`MAX_LISTED`] are named; the rest are
//! only counted ("stopped after 20 problems, at least 80 more"). However
//! many problems a request has, its status stays a few KiB.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::limits::{MAX_STATUS_DETAILS_BYTES, MAX_STATUS_MESSAGE_BYTES};

/// Most problems one status names.
pub const MAX_LISTED: usize = 20;

/// Longest field name, subject or description kept, in bytes of UTF-8.
pub const MAX_ITEM_BYTES: usize = 256;

/// Room kept at the end of a message for the "stopped after …" note.
const NOTE_BYTES: usize = 64;

/// What a detail entry costs beyond its texts: protobuf tags and lengths.
const DETAIL_OVERHEAD_BYTES: usize = 16;

/// Room in the details for the `google.rpc.Status` around the entries: its
/// code, its copy of the message and the `Any` type URL.
const DETAILS_ENVELOPE_BYTES: usize = MAX_STATUS_MESSAGE_BYTES + 256;

/// `text` cut to at most `max_bytes` bytes of UTF-8 on a character
/// boundary, ending with "…" when cut.
pub fn cut(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    const ELLIPSIS: &str = "…";
    let mut end = max_bytes.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end])
}

/// `text` cut to [`MAX_STATUS_MESSAGE_BYTES`]: a status message any mesh
/// client can read.
pub fn message(text: &str) -> String {
    cut(text, MAX_STATUS_MESSAGE_BYTES)
}

/// How one problem is repeated in the status details.
#[derive(Debug, Clone, Copy)]
pub enum Detail<'a> {
    /// A `google.rpc.BadRequest` field violation (INVALID_ARGUMENT).
    Field {
        /// The field's path, e.g. `items[3].sku`.
        field: &'a str,
        /// What is wrong with it.
        description: &'a str,
    },
    /// A `google.rpc.PreconditionFailure` violation (FAILED_PRECONDITION).
    Precondition {
        /// A short kind, e.g. `UNKNOWN_SKU`.
        kind: &'a str,
        /// What it is about, e.g. the SKU.
        subject: &'a str,
        /// What is wrong.
        description: &'a str,
    },
}

impl Detail<'_> {
    fn texts(&self) -> [&str; 3] {
        match *self {
            Detail::Field { field, description } => [field, description, ""],
            Detail::Precondition {
                kind,
                subject,
                description,
            } => [kind, subject, description],
        }
    }
}

/// The problems of one answer, as one bounded status: `"<head>: a; b; …"`
/// with the same problems as details.
#[derive(Debug)]
pub struct ProblemList {
    code: Code,
    head: String,
    listed: Vec<String>,
    message_bytes: usize,
    details: ErrorDetails,
    details_bytes: usize,
    omitted: usize,
}

impl ProblemList {
    /// An empty list whose status will have `code` and a message starting
    /// with `head` (e.g. "invalid CreateUserRequest", "insufficient stock").
    pub fn new(code: Code, head: &str) -> Self {
        let head = cut(head, MAX_ITEM_BYTES);
        Self {
            code,
            message_bytes: head.len() + 2,
            head,
            listed: Vec::new(),
            details: ErrorDetails::new(),
            details_bytes: 0,
            omitted: 0,
        }
    }

    /// Adds a problem: `text` in the message (cut to two
    /// [`MAX_ITEM_BYTES`]), `detail` in the details (each text cut to
    /// [`MAX_ITEM_BYTES`]). Once the list is full it is only counted.
    pub fn add(&mut self, text: &str, detail: Detail<'_>) {
        let text = cut(text, 2 * MAX_ITEM_BYTES);
        let texts = detail.texts().map(|part| cut(part, MAX_ITEM_BYTES));
        let detail_bytes = texts.iter().map(String::len).sum::<usize>() + DETAIL_OVERHEAD_BYTES;
        let fits = self.listed.len() < MAX_LISTED
            && self.message_bytes + text.len() + 2 + NOTE_BYTES <= MAX_STATUS_MESSAGE_BYTES
            && self.details_bytes + detail_bytes + DETAILS_ENVELOPE_BYTES
                <= MAX_STATUS_DETAILS_BYTES;
        if !fits || self.omitted > 0 {
            self.omitted += 1;
            return;
        }
        self.message_bytes += text.len() + 2;
        self.details_bytes += detail_bytes;
        self.listed.push(text);
        let [first, second, third] = texts;
        match detail {
            Detail::Field { .. } => {
                self.details.add_bad_request_violation(first, second);
            }
            Detail::Precondition { .. } => {
                self.details
                    .add_precondition_failure_violation(first, second, third);
            }
        }
    }

    /// Counts `count` more problems that were found but not kept.
    pub fn count_unlisted(&mut self, count: usize) {
        self.omitted += count;
    }

    /// Whether further problems would only be counted: a long request's
    /// checks may stop here.
    pub fn is_full(&self) -> bool {
        self.omitted > 0 || self.listed.len() >= MAX_LISTED
    }

    /// Whether no problem was added.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.omitted == 0
    }

    /// `"<head>: a; b; c"`, with "; (stopped after N problems, at least M
    /// more)" when some were only counted (or checking stopped at a full list).
    pub fn message(&self) -> String {
        let mut message = format!("{}: {}", self.head, self.listed.join("; "));
        if self.is_full() {
            message.push_str(&format!(
                "; (stopped after {} problems{})",
                self.listed.len(),
                if self.omitted > 0 {
                    format!(", at least {} more", self.omitted)
                } else {
                    String::new()
                }
            ));
        }
        message
    }

    /// The status: the code, [`Self::message`] and the details.
    pub fn into_status(self) -> Status {
        let message = self.message();
        Status::with_error_details(self.code, message, self.details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_cuts_long_text_on_a_character_boundary() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("abcdefghij", 10), "abcdefghij");
        assert_eq!(cut("abcdefghijk", 10), "abcdefg…");
        let euros = "€".repeat(100);
        let cut_euros = cut(&euros, 20);
        assert!(cut_euros.len() <= 20, "{}", cut_euros.len());
        assert_eq!(cut_euros, format!("{}…", "€".repeat(5)));
    }

    #[test]
    fn a_short_list_names_every_problem_in_message_and_details() {
        let mut list = ProblemList::new(Code::FailedPrecondition, "insufficient stock");
        for (sku, text) in [("A", "A (asked 5, available 2)"), ("B", "B (unknown sku)")] {
            list.add(
                text,
                Detail::Precondition {
                    kind: "SHORT",
                    subject: sku,
                    description: text,
                },
            );
        }
        assert!(!list.is_full());
        let status = list.into_status();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "insufficient stock: A (asked 5, available 2); B (unknown sku)"
        );
        let failure = status.get_details_precondition_failure().expect("details");
        assert_eq!(failure.violations.len(), 2);
        assert_eq!(failure.violations[1].subject, "B");
    }

    /// Hardening finding 1: one line per problem without a bound made an
    /// answer of ~24 KB for 100 long SKUs. Whatever the number and size of
    /// the problems (and however many bytes their characters take), the
    /// status stays within the limits every mesh client accepts.
    #[test]
    fn any_number_of_problems_of_any_size_gives_a_bounded_status() {
        for (count, item) in [
            (100, "x".repeat(64)),
            (2_000, "€".repeat(10_000)),
            (25, "é".repeat(300)),
        ] {
            for code in [Code::InvalidArgument, Code::FailedPrecondition] {
                let mut list = ProblemList::new(code, "invalid Something");
                for index in 0..count {
                    let text = format!("{index}: {item}");
                    let detail = if code == Code::InvalidArgument {
                        Detail::Field {
                            field: &item,
                            description: &text,
                        }
                    } else {
                        Detail::Precondition {
                            kind: "UNKNOWN_SKU",
                            subject: &item,
                            description: &text,
                        }
                    };
                    list.add(&text, detail);
                }
                let status = list.into_status();
                assert!(
                    status.message().len() <= MAX_STATUS_MESSAGE_BYTES,
                    "{count} × {} bytes: message of {}",
                    item.len(),
                    status.message().len()
                );
                assert!(
                    status.details().len() <= MAX_STATUS_DETAILS_BYTES,
                    "{count} × {} bytes: details of {}",
                    item.len(),
                    status.details().len()
                );
                assert!(
                    status.message().contains("(stopped after"),
                    "{}",
                    status.message()
                );
            }
        }
    }

    #[test]
    fn counts_what_it_does_not_list() {
        let mut list = ProblemList::new(Code::InvalidArgument, "invalid R");
        for index in 0..25 {
            list.add(
                &format!("f{index}: bad"),
                Detail::Field {
                    field: "f",
                    description: "bad",
                },
            );
        }
        assert!(list.is_full());
        assert!(list
            .message()
            .ends_with("f19: bad; (stopped after 20 problems, at least 5 more)"));
    }
}
