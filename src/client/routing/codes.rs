//! A route's `RetryOnStatusCodes` are HTTP status codes (Envoy's
//! `retriable-status-codes`), but a gRPC error travels in an HTTP 200 answer
//! with a `grpc-status`. The mesh maps each code through gRPC's own
//! HTTP-to-status table (the one a gRPC client applies to a non-gRPC answer):
//!
//! | HTTP | gRPC status retried |
//! |---|---|
//! | 400 | INTERNAL |
//! | 401 | UNAUTHENTICATED |
//! | 403 | PERMISSION_DENIED |
//! | 404 | UNIMPLEMENTED |
//! | 429, 502, 503, 504 | UNAVAILABLE |
//! | any other | UNKNOWN |

use tonic::Code;

/// The gRPC status gRPC gives an answer with HTTP status `http`.
pub(crate) fn grpc_code_for_http(http: u32) -> Code {
    match http {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A set of gRPC codes (one bit per code, 0–16).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeSet(u32);

impl CodeSet {
    /// The codes of `http_codes`, mapped by [`grpc_code_for_http`].
    pub(crate) fn from_http(http_codes: &[u32]) -> Self {
        let mut set = Self::default();
        for code in http_codes {
            set.0 |= 1 << (grpc_code_for_http(*code) as u32);
        }
        set
    }

    /// Whether `code` is in the set.
    pub fn contains(self, code: Code) -> bool {
        let bit = code as u32;
        bit < 32 && self.0 & (1 << bit) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The codes, by gRPC's upper-case names.
    pub fn names(self) -> Vec<&'static str> {
        (0..=16)
            .map(Code::from_i32)
            .filter(|code| self.contains(*code))
            .map(crate::telemetry::grpc_code_name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_grpcs_http_to_status_table() {
        assert_eq!(grpc_code_for_http(400), Code::Internal);
        assert_eq!(grpc_code_for_http(401), Code::Unauthenticated);
        assert_eq!(grpc_code_for_http(403), Code::PermissionDenied);
        assert_eq!(grpc_code_for_http(404), Code::Unimplemented);
        for unavailable in [429, 502, 503, 504] {
            assert_eq!(grpc_code_for_http(unavailable), Code::Unavailable);
        }
        for other in [200, 409, 500, 501, 599] {
            assert_eq!(grpc_code_for_http(other), Code::Unknown, "{other}");
        }
    }

    #[test]
    fn sets_hold_the_mapped_codes() {
        let set = CodeSet::from_http(&[503, 429, 404]);
        assert!(set.contains(Code::Unavailable));
        assert!(set.contains(Code::Unimplemented));
        assert!(!set.contains(Code::Internal));
        assert_eq!(set.names(), ["UNIMPLEMENTED", "UNAVAILABLE"]);
        assert!(CodeSet::from_http(&[]).is_empty());
    }
}
