//! Decoding `application/x-www-form-urlencoded` query strings.

use crate::hex;

/// A query string that cannot be decoded: which parameter, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The parameter to blame (`query` when its own name cannot be read).
    pub parameter: String,
    /// What is wrong with it.
    pub message: String,
}

/// The `name=value` pairs of a query string, percent-decoded, `+` as space, in order.
/// Invalid UTF-8 after decoding (a lone surrogate's encoding included) is an error naming
/// the parameter.
pub fn parse(query: &str) -> Result<Vec<(String, String)>, Malformed> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).map_err(|_| Malformed {
                parameter: "query".to_owned(),
                message: "a parameter name is not valid UTF-8".to_owned(),
            })?;
            let value = decode(value).map_err(|_| Malformed {
                message: "not valid UTF-8 once percent-decoded".to_owned(),
                parameter: name.clone(),
            })?;
            Ok((name, value))
        })
        .collect()
}

fn decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex::digit),
                bytes.get(i + 2).copied().and_then(hex::digit),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                // A `%` not followed by two hex digits stands for itself.
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out)
}

/// Percent-encodes a value for use in a query string (for links and cursors in tests).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => {
                out.push('%');
                hex::push_upper(&mut out, byte);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_and_plus() {
        let pairs = parse("q=a+b%20c&meta.site=fra%31&empty=&flag").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("q".into(), "a b c".into()),
                ("meta.site".into(), "fra1".into()),
                ("empty".into(), "".into()),
                ("flag".into(), "".into()),
            ]
        );
    }

    #[test]
    fn keeps_malformed_escapes_literally_and_rejects_bad_utf8() {
        assert_eq!(parse("q=100%").unwrap()[0].1, "100%");
        assert_eq!(parse("q=%zz").unwrap()[0].1, "%zz");
        assert!(parse("q=%ff").is_err());
    }

    #[test]
    fn encode_round_trips() {
        let text = "a b&c=d/é";
        assert_eq!(parse(&format!("x={}", encode(text))).unwrap()[0].1, text);
    }
}
