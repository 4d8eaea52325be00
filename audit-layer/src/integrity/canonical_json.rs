//! The bytes PostgreSQL prints for a `jsonb` value, computed from the JSON text that is
//! sent to it.
//!
//! `jsonb` does not keep the text it was given: it keeps the last of duplicate keys, orders
//! an object's keys (shorter first, then by their UTF-8 bytes), decodes `\u` escapes, and
//! stores numbers as `numeric`, which prints them in plain decimal with the input's scale
//! (`1.50e1` prints as `15.0`, `1e-3` as `0.001`, `-0` as `0`). A hash over what was sent
//! could not be checked against what is stored; a hash over what PostgreSQL prints
//! (`metadata::text`, or the binary `jsonb` a `COPY ... TO` sends) can, by the writer before
//! it sends a record and by a verifier from the stored row. [`jsonb_text`] is that
//! printing, done without PostgreSQL: `tests/integrity_encoding.rs` compares it with
//! PostgreSQL's own over generated JSON.
//!
//! ```
//! use audit_layer::integrity::jsonb_text;
//!
//! let sent = r#"{"site":"fra1","a":1.50e1,"site":"ams1","n":[1e-3,-0]}"#;
//! assert_eq!(jsonb_text(sent).unwrap(), r#"{"a": 15.0, "n": [0.001, 0], "site": "ams1"}"#);
//! ```

use std::fmt;

/// Why a text is not JSON that `jsonb` would take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotJsonb {
    /// Where in the text, in bytes.
    pub at: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

impl fmt::Display for NotJsonb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not JSON that jsonb takes, at byte {}: {}",
            self.at, self.reason
        )
    }
}

impl std::error::Error for NotJsonb {}

/// The exponents `numeric` reads are below this, in magnitude (`INT_MAX / 2`).
const MAX_EXPONENT: i64 = 1_073_741_823;

/// The most digits `numeric` keeps after the point (`NUMERIC_DSCALE_MAX`).
const MAX_SCALE: i64 = 0x3FFF;

/// The most digits a nonzero `numeric` has before the point (weight below `0x7FFF`
/// base-10000 digits: values below `10^131072`).
const MAX_WHOLE_DIGITS: i64 = 131_072;

/// How deep values may nest (PostgreSQL stops at its stack depth limit; far beyond what a
/// record carries).
const MAX_DEPTH: usize = 512;

/// The text PostgreSQL 15 prints for `json::jsonb`, or why it would refuse `json`.
pub fn jsonb_text(json: &str) -> Result<String, NotJsonb> {
    if let Some(printed) = flat_object(json) {
        return Ok(printed);
    }
    let mut parser = Parser {
        text: json.as_bytes(),
        at: 0,
    };
    let value = parser.value(0)?;
    parser.skip_space();
    if parser.at != parser.text.len() {
        return Err(parser.error("text after the value"));
    }
    let mut out = String::with_capacity(json.len() + json.len() / 8);
    value.print(&mut out);
    Ok(out)
}

/// The common case, without building a tree: a compact object whose values are strings
/// without escapes, integers, booleans or null (what most records' metadata is). Such
/// values print as they are written; only the members' order and the separators change.
/// `None` for anything else, which the full parser takes.
fn flat_object(json: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let mut members: Vec<(&str, &str)> = Vec::new();
    let mut at = 1;
    if bytes.first() != Some(&b'{') {
        return None;
    }
    if bytes.get(1) == Some(&b'}') {
        return (bytes.len() == 2).then(|| "{}".to_owned());
    }
    // A string with nothing to unescape: its text, quotes included, and where it ends.
    let plain_string = |start: usize| -> Option<usize> {
        if bytes.get(start) != Some(&b'"') {
            return None;
        }
        let mut i = start + 1;
        loop {
            match *bytes.get(i)? {
                b'"' => return Some(i + 1),
                b'\\' => return None,
                b if b < 0x20 => return None,
                _ => i += 1,
            }
        }
    };
    loop {
        let key_end = plain_string(at)?;
        let key = &json[at..key_end];
        if bytes.get(key_end) != Some(&b':') {
            return None;
        }
        let value_start = key_end + 1;
        let value_end = match *bytes.get(value_start)? {
            b'"' => plain_string(value_start)?,
            b't' if json[value_start..].starts_with("true") => value_start + 4,
            b'f' if json[value_start..].starts_with("false") => value_start + 5,
            b'n' if json[value_start..].starts_with("null") => value_start + 4,
            b'-' | b'0'..=b'9' => {
                let digits_start = value_start + usize::from(bytes[value_start] == b'-');
                let mut end = digits_start;
                while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
                let digits = &bytes[digits_start..end];
                // Integers print as they are, but for a leading zero (not JSON) and -0.
                let canonical = !digits.is_empty()
                    && (digits[0] != b'0' || digits.len() == 1)
                    && !(digits == b"0" && digits_start > value_start);
                if !canonical || matches!(bytes.get(end), Some(b'.' | b'e' | b'E')) {
                    return None;
                }
                end
            }
            _ => return None,
        };
        members.push((key, &json[value_start..value_end]));
        match bytes.get(value_end) {
            Some(b',') => at = value_end + 1,
            Some(b'}') if value_end + 1 == bytes.len() => break,
            _ => return None,
        }
    }
    // jsonb's order: shorter keys first, then by bytes (quotes alike on every key); the
    // last of duplicates kept, as the stable sort leaves them in input order.
    members.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    let mut out = String::with_capacity(json.len() + 2 * members.len());
    out.push('{');
    let mut first = true;
    for (i, (key, value)) in members.iter().enumerate() {
        if members.get(i + 1).is_some_and(|(next, _)| next == key) {
            continue;
        }
        if !first {
            out.push_str(", ");
        }
        first = false;
        out.push_str(key);
        out.push_str(": ");
        out.push_str(value);
    }
    out.push('}');
    Some(out)
}

enum Value {
    Null,
    Bool(bool),
    /// Already in `numeric`'s printed form.
    Number(String),
    String(String),
    Array(Vec<Value>),
    /// Keys unique (the last kept) and in `jsonb`'s order.
    Object(Vec<(String, Value)>),
}

impl Value {
    fn print(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(text) => out.push_str(text),
            Value::String(s) => print_string(out, s),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.print(out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    print_string(out, key);
                    out.push_str(": ");
                    value.print(out);
                }
                out.push('}');
            }
        }
    }
}

/// PostgreSQL's `escape_json`: `"` and `\` escaped, the five short control escapes, other
/// control characters as lowercase `\u00xx`, everything else as it is.
fn print_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &'static str) -> NotJsonb {
        NotJsonb {
            at: self.at,
            reason,
        }
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), NotJsonb> {
        self.skip_space();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(reason))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, NotJsonb> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.skip_space();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.word("true", Value::Bool(true)),
            Some(b'f') => self.word("false", Value::Bool(false)),
            Some(b'n') => self.word("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("a value was expected")),
        }
    }

    fn word(&mut self, word: &'static str, value: Value) -> Result<Value, NotJsonb> {
        if self.text[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("a value was expected"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, NotJsonb> {
        self.at += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_space();
            if self.peek() != Some(b'"') {
                return Err(self.error("a key was expected"));
            }
            let key = self.string()?;
            self.expect(b':', "':' was expected")?;
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.error("',' or '}' was expected")),
            }
        }
        // The last of duplicate keys wins; then shorter keys first, then by their bytes.
        // A stable sort keeps duplicates in input order, so the last is the one kept.
        members.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        let mut unique: Vec<(String, Value)> = Vec::with_capacity(members.len());
        for (key, value) in members {
            match unique.last_mut() {
                Some(last) if last.0 == key => last.1 = value,
                _ => unique.push((key, value)),
            }
        }
        Ok(Value::Object(unique))
    }

    fn array(&mut self, depth: usize) -> Result<Value, NotJsonb> {
        self.at += 1;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("',' or ']' was expected")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, NotJsonb> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.error("four hex digits were expected"))?;
        let mut value = 0u32;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.error("four hex digits were expected"))?;
            value = value * 16 + v;
        }
        self.at += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<String, NotJsonb> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let start = self.at;
            while let Some(&b) = self.text.get(self.at) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            let plain = std::str::from_utf8(&self.text[start..self.at])
                .map_err(|_| self.error("not UTF-8"))?;
            out.push_str(plain);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escaped = self.peek().ok_or_else(|| self.error("unfinished escape"))?;
                    self.at += 1;
                    match escaped {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return Err(self.error("unknown escape")),
                    }
                }
                Some(_) => return Err(self.error("a control character in a string")),
                None => return Err(self.error("unfinished string")),
            }
        }
    }

    /// `\uXXXX`, or a surrogate pair `\uD8xx\uDCxx`; `jsonb` refuses `\u0000` and lone
    /// surrogates.
    fn unicode_escape(&mut self) -> Result<char, NotJsonb> {
        let first = self.hex4()?;
        let code = match first {
            0 => return Err(self.error("\\u0000 cannot be stored in jsonb")),
            0xD800..=0xDBFF => {
                if !self.text[self.at..].starts_with(b"\\u") {
                    return Err(self.error("a high surrogate without its low one"));
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("a high surrogate without its low one"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("a low surrogate without its high one")),
            code => code,
        };
        char::from_u32(code).ok_or_else(|| self.error("not a character"))
    }

    fn number(&mut self) -> Result<Value, NotJsonb> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("a digit was expected")),
        }
        let int_digits = &self.text[int_start..self.at];
        let mut frac_digits: &[u8] = &[];
        if self.peek() == Some(b'.') {
            self.at += 1;
            let frac_start = self.at;
            self.digits();
            if self.at == frac_start {
                return Err(self.error("a digit was expected after '.'"));
            }
            frac_digits = &self.text[frac_start..self.at];
        }
        let mut exponent: i64 = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            let exp_negative = match self.peek() {
                Some(b'-') => {
                    self.at += 1;
                    true
                }
                Some(b'+') => {
                    self.at += 1;
                    false
                }
                _ => false,
            };
            let exp_start = self.at;
            self.digits();
            if self.at == exp_start {
                return Err(self.error("a digit was expected in the exponent"));
            }
            for &d in &self.text[exp_start..self.at] {
                exponent = (exponent * 10 + i64::from(d - b'0')).min(MAX_EXPONENT);
            }
            if exp_negative {
                exponent = -exponent;
            }
            if exponent.abs() >= MAX_EXPONENT {
                self.at = start;
                return Err(self.error("an exponent beyond what numeric reads"));
            }
        }
        numeric_text(negative, int_digits, frac_digits, exponent)
            .map(Value::Number)
            .ok_or(NotJsonb {
                at: start,
                reason: "a number beyond what numeric holds",
            })
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }
}

/// `numeric_out` of `numeric_in`: plain decimal, as many fraction digits as the input
/// had less its exponent (none below zero), no sign on zero; `None` where `numeric_in`
/// overflows (more than 16,383 fraction digits, or a nonzero value of 10^131072 or more).
fn numeric_text(
    negative: bool,
    int_digits: &[u8],
    frac_digits: &[u8],
    exponent: i64,
) -> Option<String> {
    let digits: Vec<u8> = int_digits.iter().chain(frac_digits).copied().collect();
    let len = digits.len() as i64;
    let scale = (frac_digits.len() as i64 - exponent).max(0);
    if scale > MAX_SCALE {
        return None;
    }
    let Some(first) = digits.iter().position(|&d| d != b'0') else {
        // Zero, whatever its exponent: only its scale shows.
        let mut out = String::from("0");
        if scale > 0 {
            out.push('.');
            out.extend(std::iter::repeat_n('0', scale as usize));
        }
        return Some(out);
    };
    // Where the decimal point falls, counted in digits from the first.
    let point = int_digits.len() as i64 + exponent;
    if point - first as i64 > MAX_WHOLE_DIGITS {
        return None;
    }
    let digit_at = |i: i64| -> u8 {
        if (0..len).contains(&i) {
            digits[i as usize]
        } else {
            b'0'
        }
    };
    let mut whole: Vec<u8> = (0..point.max(0)).map(digit_at).collect();
    let leading_zeros = whole.iter().take_while(|&&d| d == b'0').count();
    whole.drain(..leading_zeros.min(whole.len()));
    if whole.is_empty() {
        whole.push(b'0');
    }
    let fraction: Vec<u8> = (point..point + scale).map(digit_at).collect();
    let mut out = String::with_capacity(whole.len() + fraction.len() + 2);
    if negative {
        out.push('-');
    }
    out.extend(whole.iter().map(|&d| d as char));
    if scale > 0 {
        out.push('.');
        out.extend(fraction.iter().map(|&d| d as char));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flat_object_path_prints_what_the_full_parser_prints() {
        for json in [
            r#"{"thread":3,"seq":12,"a":"x","bb":true,"a":null,"c":-7,"d":0}"#,
            r#"{}"#,
            r#"{"é":"✓","e":"plain"}"#,
        ] {
            let fast = flat_object(json).expect(json);
            let mut parser = Parser {
                text: json.as_bytes(),
                at: 0,
            };
            let mut full = String::new();
            parser.value(0).unwrap().print(&mut full);
            assert_eq!(fast, full, "{json}");
        }
        // What it leaves to the full parser.
        for json in [
            r#"{"a":-0}"#,
            r#"{"a":1.5}"#,
            r#"{"a":"\n"}"#,
            r#"{"a":[1]}"#,
            r#" {"a":1}"#,
            r#"{"a":1} "#,
        ] {
            assert_eq!(flat_object(json), None, "{json}");
        }
    }

    #[test]
    fn numbers_print_as_numeric_does() {
        for (json, printed) in [
            ("0", "0"),
            ("-0", "0"),
            ("-0.00", "0.00"),
            ("1.50e1", "15.0"),
            ("1e-3", "0.001"),
            ("1E+2", "100"),
            ("1.0e+2", "100"),
            ("123e-1", "12.3"),
            ("0.00123", "0.00123"),
            ("-12.5e-2", "-0.125"),
            ("12345678901234567890123", "12345678901234567890123"),
            ("1e3", "1000"),
        ] {
            assert_eq!(jsonb_text(json).unwrap(), printed, "{json}");
        }
        assert_eq!(jsonb_text("0e999999999").unwrap(), "0");
        assert_eq!(jsonb_text("1e131071").unwrap().len(), 131_072);
        assert!(jsonb_text("1e131072").is_err());
        assert!(jsonb_text("0e-16384").is_err());
        assert!(jsonb_text("1.5e-16383").is_err());
        assert!(jsonb_text("0e1073741823").is_err());
        assert!(jsonb_text("01").is_err());
        assert!(jsonb_text("1.").is_err());
    }

    #[test]
    fn objects_keep_the_last_duplicate_and_order_keys_by_length_then_bytes() {
        assert_eq!(
            jsonb_text(r#"{"bb":1,"a":2,"c":3,"a":4, "é":5}"#).unwrap(),
            r#"{"a": 4, "c": 3, "bb": 1, "é": 5}"#
        );
        assert_eq!(jsonb_text(" { } ").unwrap(), "{}");
        assert_eq!(jsonb_text("[ ]").unwrap(), "[]");
    }

    #[test]
    fn strings_decode_escapes_and_print_as_escape_json_does() {
        assert_eq!(
            jsonb_text(r#""\u00e9\ud83d\ude00\/\u001f\u007f\b""#).unwrap(),
            "\"é😀/\\u001f\u{7f}\\b\""
        );
        assert!(jsonb_text(r#""\u0000""#).is_err());
        assert!(jsonb_text(r#""\ud800""#).is_err());
        assert!(jsonb_text("\"tab\tinside\"").is_err());
    }
}
