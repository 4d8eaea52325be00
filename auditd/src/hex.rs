//! Hexadecimal, the one codec for every place that needs it: HMAC signatures of links,
//! opaque cursors, percent-encoding in query strings.
//!
//! Only the digits `0-9`, `a-f` and `A-F` are accepted (`u8::from_str_radix` would also
//! take a leading `+`, so two texts could decode to the same bytes).

const LOWER: &[u8; 16] = b"0123456789abcdef";
const UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The value of one hex digit.
pub fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `bytes` as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        push(&mut out, byte, LOWER);
    }
    out
}

/// Appends `byte` as two uppercase hex digits (as percent-encoding writes them).
pub fn push_upper(out: &mut String, byte: u8) {
    push(out, byte, UPPER);
}

fn push(out: &mut String, byte: u8, digits: &[u8; 16]) {
    out.push(char::from(digits[usize::from(byte >> 4)]));
    out.push(char::from(digits[usize::from(byte & 15)]));
}

/// The bytes `text` spells in hex, either case; `None` unless it is an even number of
/// hex digits and nothing else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_anything_but_digits() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xab, 0xff];
        assert_eq!(encode(&bytes), "00017f80abff");
        assert_eq!(decode("00017f80abff").as_deref(), Some(&bytes[..]));
        assert_eq!(decode("ABff").as_deref(), Some(&[0xab, 0xff][..]));
        for bad in ["+f", "-1", "abc", "zz", " 1", "0x"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
        let mut upper = String::new();
        push_upper(&mut upper, 0xe9);
        assert_eq!(upper, "E9");
    }
}
