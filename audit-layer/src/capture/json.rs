//! Writing JSON text on the emitting thread: the metadata members of a record, and string
//! values escaped, repaired and capped as they are formatted.
//!
//! Metadata is kept as the text of JSON object members rather than a map, so capturing a
//! field costs an append, not an allocation (see BENCHMARKS.md). The writer here knows only
//! JSON; what a field means is the visitor's business (`visit`), and which values need a
//! fix-up note is said by `fixups`.

use std::fmt::{self, Write as _};

/// A reused buffer that grew past this is given back to the allocator, so one huge event
/// does not pin its size in every thread for good.
pub(crate) const KEEP_CAPACITY: usize = 16 * 1024;

/// JSON object members, `"key":value,...`, without the braces.
#[derive(Debug, Default, Clone)]
pub(crate) struct Members(pub(crate) String);

impl Members {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Starts a member: the separator, the escaped key and the colon.
    pub(crate) fn key(&mut self, key: &str) {
        if self.0.is_empty() {
            // One allocation for a typical event's metadata, instead of one per doubling.
            self.0.reserve(256);
        } else {
            self.0.push(',');
        }
        json_string(&mut self.0, key);
        self.0.push(':');
    }

    /// Puts the members of `other` before these (so these win in jsonb).
    pub(crate) fn prepend(&mut self, other: &Members) {
        if other.is_empty() {
            return;
        }
        if !self.0.is_empty() {
            self.0.insert(0, ',');
        }
        self.0.insert_str(0, &other.0);
    }

    /// Empties the buffer, keeping its room unless it grew too large to keep.
    pub(crate) fn clear(&mut self) {
        if self.0.capacity() > KEEP_CAPACITY {
            self.0 = String::new();
        } else {
            self.0.clear();
        }
    }

    /// Starts a member whose `"key":` is already written out.
    #[inline(always)]
    pub(crate) fn raw_key(&mut self, key: &str) {
        if self.0.is_empty() {
            self.0.reserve(256);
        } else {
            self.0.push(',');
        }
        self.0.push_str(key);
    }

    /// Appends the members of `other` after these (later members win in jsonb).
    pub(crate) fn extend(&mut self, other: &Members) {
        if other.is_empty() {
            return;
        }
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(&other.0);
    }
}

/// Writes a JSON string value into a buffer as it is formatted, escaping it, replacing NUL
/// (which PostgreSQL refuses) and cutting it at `max` bytes on a character boundary.
pub(crate) struct JsonText<'a> {
    out: &'a mut String,
    max: usize,
    /// Bytes of the original value seen, and kept.
    seen: usize,
    kept: usize,
    nuls: usize,
}

impl<'a> JsonText<'a> {
    pub(crate) fn new(out: &'a mut String, max: usize) -> Self {
        out.push('"');
        JsonText {
            out,
            max,
            seen: 0,
            kept: 0,
            nuls: 0,
        }
    }

    /// Bytes of the value kept so far.
    pub(crate) fn kept(&self) -> usize {
        self.kept
    }

    pub(crate) fn finish(self, name: &str, notes: &mut Vec<String>) {
        self.out.push('"');
        if self.nuls > 0 {
            notes.push(format!(
                "metadata.{name}: {} NUL byte(s) replaced by U+FFFD",
                self.nuls
            ));
        }
        if self.seen > self.kept {
            notes.push(format!(
                "metadata.{name}: truncated from {} to {} bytes",
                self.seen, self.kept
            ));
        }
    }
}

/// Writes `s` as a quoted JSON string.
pub(crate) fn json_string(out: &mut String, s: &str) {
    out.push('"');
    escape(out, s);
    out.push('"');
}

/// Writes `s` escaped for a JSON string, with NUL (which jsonb refuses) replaced by U+FFFD;
/// returns how many NULs were replaced.
fn escape(out: &mut String, s: &str) -> usize {
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20 && b != b'"' && b != b'\\')
    });
    if plain {
        // The common case, checked without branching per byte.
        out.push_str(s);
        return 0;
    }
    let mut nuls = 0;
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0 => {
                nuls += 1;
                "\u{FFFD}"
            }
            0x01..=0x1f => {
                out.push_str(&s[start..i]);
                let _ = write!(out, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        // Every byte matched above is ASCII, so `i` is a character boundary.
        out.push_str(&s[start..i]);
        out.push_str(escaped);
        start = i + 1;
    }
    out.push_str(&s[start..]);
    nuls
}

impl fmt::Write for JsonText<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.seen += s.len();
        if self.kept >= self.max {
            return Ok(());
        }
        let room = self.max - self.kept;
        let piece = if s.len() <= room {
            s
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            // Nothing more is kept after a cut, even if a later piece would fit.
            self.max = self.kept + cut;
            &s[..cut]
        };
        self.kept += piece.len();
        self.nuls += escape(self.out, piece);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str, max: usize) -> (String, Vec<String>) {
        let mut out = String::new();
        let mut notes = Vec::new();
        let mut t = JsonText::new(&mut out, max);
        t.write_str(value).unwrap();
        t.finish("k", &mut notes);
        (out, notes)
    }

    #[test]
    fn json_text_escapes_repairs_and_cuts_on_character_boundaries() {
        assert_eq!(text("a\"b\\c\nd\u{1}", 100).0, r#""a\"b\\c\nd\u0001""#);
        let (json, notes) = text("x\0y", 100);
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), "x\u{FFFD}y");
        assert_eq!(notes, vec!["metadata.k: 1 NUL byte(s) replaced by U+FFFD"]);
        let (json, notes) = text("ééé", 5);
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), "éé");
        assert_eq!(notes, vec!["metadata.k: truncated from 6 to 4 bytes"]);
    }

    #[test]
    fn json_strings_escape_only_what_json_requires() {
        let mut out = String::new();
        json_string(&mut out, "plain é");
        json_string(&mut out, "q\"b\\\u{1f}");
        assert_eq!(out, r#""plain é""q\"b\\\u001f""#);
    }
}
