//! Event bodies kept in a portable `TEXT` column (SQLite and PostgreSQL
//! share no binary column type in the mesh's SQL): lower-case hex. The
//! orders outbox and the shipping inbox both store bodies this way.

/// `body` as lower-case hex (one allocation: an order's event is encoded
/// on its commit path).
pub fn encode(body: &[u8]) -> String {
    hex::encode(body)
}

/// The bytes of a hex text made by [`encode`]; `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
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
        assert_eq!(decode("+f"), None);
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&every_byte)), Some(every_byte));
    }
}
