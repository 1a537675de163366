//! Lowercase hex, the one text form of hashes, nonces, MACs and keys on the wire and
//! in files. A leaf: it imports nothing from the crate, so the key, the password and
//! the protocol can all use it.

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Bytes, not chars: a char pushed checks its UTF-8 width every time (a hash
    // and a MAC a file).
    let digits = bytes
        .iter()
        .flat_map(|byte| {
            [
                DIGITS[usize::from(byte >> 4)],
                DIGITS[usize::from(byte & 0xf)],
            ]
        })
        .collect();
    String::from_utf8(digits).expect("hex digits are ASCII")
}

/// Decodes exactly `N` bytes from exactly `2 * N` lowercase hex digits; anything
/// else (upper case, wrong length, other characters) is `None`.
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0; N];
    unhex_into(text, &mut out).then_some(out)
}

/// [`unhex`] into a slice of the expected length; false if `text` is not exactly that.
pub(crate) fn unhex_into(text: &str, out: &mut [u8]) -> bool {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if text.len() != 2 * out.len() {
        return false;
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => *byte = high << 4 | low,
            _ => return false,
        }
    }
    true
}

/// Decodes any even number of lowercase hex digits; anything else is `None`.
pub(crate) fn unhex_vec(text: &str) -> Option<Vec<u8>> {
    let mut out = vec![0; text.len() / 2];
    unhex_into(text, &mut out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_strict_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(unhex::<3>("00abff"), Some([0x00, 0xab, 0xff]));
        assert_eq!(unhex::<3>("00ABFF"), None);
        assert_eq!(unhex::<3>("00abf"), None);
        assert_eq!(unhex::<3>("00abfff0"), None);
        assert_eq!(unhex::<3>("00abgg"), None);
        assert_eq!(unhex::<2>("+1ab"), None);
        assert_eq!(unhex_vec("00ff"), Some(vec![0, 0xff]));
        assert_eq!(unhex_vec("00f"), None);
        assert_eq!(unhex_vec(""), Some(vec![]));
    }
}
