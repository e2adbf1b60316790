//! Event bodies kept in a portable `TEXT` column (SQLite and PostgreSQL
//! share no binary column type in the mesh's SQL): lower-case hex. The
//! orders outbox and the shipping inbox both store bodies this way.

/// `body` as lower-case hex.
pub fn encode(body: &[u8]) -> String {
    body.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The bytes of a hex text made by [`encode`]; `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_anything_else_is_refused() {
        assert_eq!(encode(&[0, 7, 128, 255]), "000780ff");
        assert_eq!(
            decode(&encode(&[0, 7, 128, 255])),
            Some(vec![0, 7, 128, 255])
        );
        assert_eq!(decode("0"), None);
        assert_eq!(decode("zz"), None);
        assert_eq!(decode("é0"), None);
    }
}
