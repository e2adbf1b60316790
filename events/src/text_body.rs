//! Event bodies kept in a portable `TEXT` column (SQLite and PostgreSQL
//! share no binary column type in the mesh's SQL): lower-case hex. The
//! orders outbox and the shipping inbox both store bodies this way.

/// `body` as lower-case hex, written into one allocation of its length (an
/// order's event is encoded on its commit path, and `hex::encode` builds
/// its string a `char` at a time: 0.2 % of orders' CPU under load).
pub fn encode(body: &[u8]) -> String {
    let mut text = vec![0; body.len() * 2];
    hex::encode_to_slice(body, &mut text)
        .ok()
        .and_then(|()| String::from_utf8(text).ok())
        // Not reached: the slice is exactly twice the body, and hex digits
        // are ASCII.
        .unwrap_or_else(|| hex::encode(body))
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
