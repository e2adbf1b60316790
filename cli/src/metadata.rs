//! `-H key=value`: gRPC metadata given on the command line (`mesh chain`,
//! `mesh bench`), checked as HTTP/2 header names and values.

use http::{header::HeaderName, HeaderValue};

/// Most `-H` a command takes.
pub const MAX_HEADERS: usize = 32;

/// `key=value` (or `key: value`): the key lower-cased, the value visible ASCII.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (key, value) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    let name = HeaderName::from_bytes(key.trim().to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{:?} is not a valid metadata key", key.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name} must be visible ASCII"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_values() {
        let (name, value) = parse_header("X-Canary=1").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-canary", "1"));
        let (name, value) = parse_header("x-user: ada").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-user", "ada"));
        assert!(parse_header("x-canary").is_err());
        assert!(parse_header("bad key=1").is_err());
        assert!(parse_header("x=\u{7}").is_err());
    }
}
