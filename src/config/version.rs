//! `--version-meta`: the version a service registers as `Meta.version`.

/// Longest version accepted (Consul allows 512 bytes per meta value; a
/// version is a short label).
const MAX_LENGTH: usize = 64;

/// Accepts a version label such as `v2` or `2.1.0-rc1`: 1 to 64 letters,
/// digits, `.`, `_` or `-` (it is written into Consul filter expressions and
/// metric labels, so nothing that needs quoting).
pub fn parse_version_meta(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_LENGTH {
        return Err(format!(
            "a version is 1 to {MAX_LENGTH} characters, such as v2 (got {} characters)",
            text.len()
        ));
    }
    match text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(bad) => Err(format!(
            "{bad:?} is not allowed in a version: use letters, digits, '.', '_' or '-' (such as v2)"
        )),
        None => Ok(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_labels_and_refuses_what_needs_quoting() {
        assert_eq!(parse_version_meta("v2").unwrap(), "v2");
        assert_eq!(parse_version_meta(" 2.1.0-rc_1 ").unwrap(), "2.1.0-rc_1");
        for bad in ["", "   ", "v 2", "v2\"", "v2==", "é", &"v".repeat(65)] {
            let error = parse_version_meta(bad).unwrap_err();
            assert!(!error.is_empty(), "{bad:?}");
        }
        assert!(parse_version_meta(&"v".repeat(64)).is_ok());
    }
}
