//! Reading tracing fields into a draft record.
//!
//! Fields named like a column fill that column; every other field goes into `metadata` as
//! typed JSON (numbers stay numbers, booleans stay booleans). Secrets are replaced here,
//! before their value is ever formatted into memory the layer keeps.
//!
//! Metadata is written straight into one buffer of JSON object members, on the emitting
//! thread: no map, no key or value allocations per field. That is most of what an event
//! costs its caller (see BENCHMARKS.md). Values PostgreSQL would refuse (NUL) or that are
//! over the cap are repaired as they are written, and noted for the record's `_fixups`.

use std::fmt::{self, Write as _};
use std::io::Write as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};

use crate::redact::{Redactor, REDACTED};
use crate::sanitize::{self, FIXUPS_KEY, RENAMED_FIXUPS_KEY};

/// JSON object members, `"key":value,...`, without the braces.
#[derive(Debug, Default, Clone)]
pub(crate) struct Members(pub(crate) Vec<u8>);

impl Members {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Starts a member: the separator, the escaped key and the colon.
    pub(crate) fn key(&mut self, key: &str) {
        if self.0.is_empty() {
            // One allocation for a typical event's metadata, instead of one per doubling.
            self.0.reserve(256);
        } else {
            self.0.push(b',');
        }
        // Serializing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.0, key);
        self.0.push(b':');
    }

    /// Appends the members of `other` after these (later members win in jsonb).
    pub(crate) fn extend(&mut self, other: &Members) {
        if other.is_empty() {
            return;
        }
        if !self.0.is_empty() {
            self.0.push(b',');
        }
        self.0.extend_from_slice(&other.0);
    }
}

/// What a column-named field holds before it is checked and sized by `sanitize`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Draft {
    pub(crate) username: Option<String>,
    pub(crate) user_id: Option<Value>,
    pub(crate) event_type: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) ip_address: Option<String>,
    pub(crate) resource_type: Option<String>,
    pub(crate) resource_id: Option<String>,
    pub(crate) resource_name: Option<String>,
    pub(crate) severity: Option<String>,
    pub(crate) metadata: Members,
    /// Fix-up notes made while writing metadata.
    pub(crate) notes: Vec<String>,
}

/// The columns a span may carry for the events inside it.
pub(crate) const INHERITED_COLUMNS: &[&str] = &[
    "username",
    "user_id",
    "ip_address",
    "resource_type",
    "resource_id",
    "resource_name",
];

impl Draft {
    /// Fills the columns this draft does not set from an enclosing span's fields.
    ///
    /// Called innermost span first, so the innermost value wins and the event's own
    /// fields win over all. (Span metadata is merged by the layer, outermost first.)
    pub(crate) fn inherit(&mut self, span: &Draft) {
        fill(&mut self.username, &span.username);
        fill(&mut self.user_id, &span.user_id);
        fill(&mut self.ip_address, &span.ip_address);
        fill(&mut self.resource_type, &span.resource_type);
        fill(&mut self.resource_id, &span.resource_id);
        fill(&mut self.resource_name, &span.resource_name);
    }

    /// Overwrites this span draft with values recorded later (`Span::record`).
    pub(crate) fn update(&mut self, later: Draft) {
        replace(&mut self.username, later.username);
        replace(&mut self.user_id, later.user_id);
        replace(&mut self.ip_address, later.ip_address);
        replace(&mut self.resource_type, later.resource_type);
        replace(&mut self.resource_id, later.resource_id);
        replace(&mut self.resource_name, later.resource_name);
        self.metadata.extend(&later.metadata);
        self.notes.extend(later.notes);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.username.is_none()
            && self.user_id.is_none()
            && self.event_type.is_none()
            && self.message.is_none()
            && self.ip_address.is_none()
            && self.resource_type.is_none()
            && self.resource_id.is_none()
            && self.resource_name.is_none()
            && self.severity.is_none()
            && self.metadata.is_empty()
    }
}

fn fill<T: Clone>(slot: &mut Option<T>, from: &Option<T>) {
    if slot.is_none() {
        slot.clone_from(from);
    }
}

fn replace<T>(slot: &mut Option<T>, later: Option<T>) {
    if later.is_some() {
        *slot = later;
    }
}

/// Which fields a [`Capture`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// An audit event, or a span with the audit target: every field.
    Everything,
    /// Any other span: only the columns it may pass on to events.
    InheritedColumns,
}

/// A [`Visit`]or that writes fields into a [`Draft`].
pub(crate) struct Capture<'a> {
    draft: &'a mut Draft,
    redactor: &'a Redactor,
    scope: Scope,
    max_value_bytes: usize,
}

enum Slot {
    Text(fn(&mut Draft) -> &mut Option<String>),
    UserId,
    Metadata,
    Ignore,
}

impl<'a> Capture<'a> {
    pub(crate) fn new(
        draft: &'a mut Draft,
        redactor: &'a Redactor,
        scope: Scope,
        max_value_bytes: usize,
    ) -> Self {
        Capture {
            draft,
            redactor,
            scope,
            max_value_bytes,
        }
    }

    fn slot(&self, name: &str) -> Slot {
        let inherited = match name {
            "username" => Some(Slot::Text(|d| &mut d.username)),
            "user_id" => Some(Slot::UserId),
            "ip_address" => Some(Slot::Text(|d| &mut d.ip_address)),
            "resource_type" => Some(Slot::Text(|d| &mut d.resource_type)),
            "resource_id" => Some(Slot::Text(|d| &mut d.resource_id)),
            "resource_name" => Some(Slot::Text(|d| &mut d.resource_name)),
            _ => None,
        };
        if let Some(slot) = inherited {
            return slot;
        }
        if self.scope == Scope::InheritedColumns {
            return Slot::Ignore;
        }
        match name {
            "event_type" => Slot::Text(|d| &mut d.event_type),
            "message" => Slot::Text(|d| &mut d.message),
            "severity" => Slot::Text(|d| &mut d.severity),
            _ => Slot::Metadata,
        }
    }

    /// Stores a value in its column slot.
    fn put_column(&mut self, slot: Slot, value: Value) {
        match slot {
            Slot::Ignore | Slot::Metadata => {}
            Slot::UserId => self.draft.user_id = Some(value),
            Slot::Text(column) => {
                *column(self.draft) = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            }
        }
    }

    /// Starts a metadata member for `name`, or writes `[REDACTED]` and returns `false`.
    fn meta_key(&mut self, name: &'static str) -> bool {
        let key = if name == FIXUPS_KEY {
            // Only the layer writes fix-up notes: an event's own field of that name is
            // kept under another key, so it cannot pose as one.
            self.draft.notes.push(format!(
                "metadata: the event's own {FIXUPS_KEY:?} field is stored as {RENAMED_FIXUPS_KEY:?}"
            ));
            RENAMED_FIXUPS_KEY
        } else {
            name
        };
        if key.contains('\0') {
            let cleaned = sanitize::clean_key(key, &mut self.draft.notes);
            self.draft.metadata.key(&cleaned);
        } else {
            self.draft.metadata.key(key);
        }
        if self.redactor.is_secret(name) {
            let _ = serde_json::to_writer(&mut self.draft.metadata.0, REDACTED);
            return false;
        }
        true
    }

    /// A metadata value given as text, escaped and repaired as it is written.
    fn meta_text(
        &mut self,
        name: &'static str,
        write: impl FnOnce(&mut JsonText<'_>) -> fmt::Result,
    ) {
        if !self.meta_key(name) {
            return;
        }
        let mut text = JsonText::new(&mut self.draft.metadata.0, self.max_value_bytes);
        let _ = write(&mut text);
        text.finish(name, &mut self.draft.notes);
    }

    /// A metadata value that is a number or boolean, written as is.
    fn meta_raw(&mut self, name: &'static str, value: impl fmt::Display) {
        if self.meta_key(name) {
            let _ = write!(self.draft.metadata.0, "{value}");
        }
    }

    /// `metadata = %json`: the original design's way of passing a dict. An object is
    /// merged member by member (secrets redacted at any depth); anything else is kept as text.
    fn merge_json(&mut self, text: &str) -> bool {
        let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(text) else {
            return false;
        };
        redact_nested(self.redactor, &mut map);
        for (key, mut value) in map {
            sanitize::clean_json(
                &mut value,
                &key,
                self.max_value_bytes,
                &mut self.draft.notes,
            );
            let key = if key == FIXUPS_KEY {
                self.draft.notes.push(format!(
                    "metadata: the event's own {FIXUPS_KEY:?} field is stored as {RENAMED_FIXUPS_KEY:?}"
                ));
                RENAMED_FIXUPS_KEY.to_owned()
            } else {
                sanitize::clean_key(&key, &mut self.draft.notes)
            };
            self.draft.metadata.key(&key);
            let _ = serde_json::to_writer(&mut self.draft.metadata.0, &value);
        }
        true
    }
}

/// Writes a JSON string value into a buffer as it is formatted, escaping it, replacing NUL
/// (which PostgreSQL refuses) and cutting it at `max` bytes on a character boundary.
pub(crate) struct JsonText<'a> {
    out: &'a mut Vec<u8>,
    max: usize,
    /// Bytes of the original value seen, and kept.
    seen: usize,
    kept: usize,
    nuls: usize,
}

impl<'a> JsonText<'a> {
    fn new(out: &'a mut Vec<u8>, max: usize) -> Self {
        out.push(b'"');
        JsonText {
            out,
            max,
            seen: 0,
            kept: 0,
            nuls: 0,
        }
    }

    fn finish(self, name: &str, notes: &mut Vec<String>) {
        self.out.push(b'"');
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

    fn escape(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0 => {
                    self.nuls += 1;
                    "\u{FFFD}".as_bytes()
                }
                0x01..=0x1f => {
                    self.out.extend_from_slice(&bytes[start..i]);
                    let _ = write!(self.out, "\\u{b:04x}");
                    start = i + 1;
                    continue;
                }
                _ => continue,
            };
            self.out.extend_from_slice(&bytes[start..i]);
            self.out.extend_from_slice(escaped);
            start = i + 1;
        }
        self.out.extend_from_slice(&bytes[start..]);
    }
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
        self.escape(piece);
        Ok(())
    }
}

/// Replaces secrets at any depth of a JSON object.
fn redact_nested(redactor: &Redactor, map: &mut Map<String, Value>) {
    for (key, value) in map.iter_mut() {
        if redactor.is_secret_dynamic(key) {
            *value = Value::String(REDACTED.to_owned());
        } else {
            redact_value(redactor, value);
        }
    }
}

fn redact_value(redactor: &Redactor, value: &mut Value) {
    match value {
        Value::Object(map) => redact_nested(redactor, map),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(redactor, v)),
        _ => {}
    }
}

impl Visit for Capture<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self.slot(field.name()) {
            Slot::Ignore => {}
            Slot::Metadata if field.name() == "metadata" => {
                let text = format!("{value:?}");
                if !self.merge_json(&text) {
                    self.meta_text(field.name(), |t| t.write_str(&text));
                }
            }
            Slot::Metadata => self.meta_text(field.name(), |t| write!(t, "{value:?}")),
            slot => self.put_column(slot, Value::String(format!("{value:?}"))),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match self.slot(field.name()) {
            Slot::Ignore => {}
            Slot::Metadata if field.name() == "metadata" && self.merge_json(value) => {}
            Slot::Metadata => self.meta_text(field.name(), |t| t.write_str(value)),
            slot => self.put_column(slot, Value::String(value.to_owned())),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let chain = |out: &mut dyn fmt::Write| -> fmt::Result {
            write!(out, "{value}")?;
            let mut source = value.source();
            while let Some(cause) = source {
                write!(out, ": {cause}")?;
                source = cause.source();
            }
            Ok(())
        };
        match self.slot(field.name()) {
            Slot::Ignore => {}
            Slot::Metadata => self.meta_text(field.name(), |t| chain(t)),
            slot => {
                let mut text = String::new();
                let _ = chain(&mut text);
                self.put_column(slot, Value::String(text))
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match self.slot(field.name()) {
            Slot::Ignore => {}
            Slot::Metadata => self.meta_raw(field.name(), value),
            slot => self.put_column(slot, Value::Number(value.into())),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match self.slot(field.name()) {
            Slot::Ignore => {}
            Slot::Metadata => self.meta_raw(field.name(), value),
            slot => self.put_column(slot, Value::Number(value.into())),
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.record_i64(field, v),
            Err(_) => match u64::try_from(value) {
                Ok(v) => self.record_u64(field, v),
                // Beyond what JSON numbers carry exactly: keep every digit as text.
                Err(_) => self.record_str(field, &value.to_string()),
            },
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.record_u64(field, v),
            Err(_) => self.record_str(field, &value.to_string()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if !value.is_finite() {
            // JSON has no NaN or infinity; keep them readable rather than dropping them.
            return self.record_str(field, &value.to_string());
        }
        match self.slot(field.name()) {
            Slot::Ignore => {}
            // Rust's shortest round-trip form, which is valid JSON for finite values.
            Slot::Metadata => self.meta_raw(field.name(), JsonFloat(value)),
            slot => {
                let number = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
                self.put_column(slot, number)
            }
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        match self.slot(field.name()) {
            Slot::Ignore => {}
            Slot::Metadata => self.meta_raw(field.name(), value),
            slot => self.put_column(slot, Value::Bool(value)),
        }
    }
}

/// A finite float as JSON writes it (`1.0`, not `1`, so it reads back as a float).
struct JsonFloat(f64);

impl fmt::Display for JsonFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 1e16 {
            write!(f, "{:.1}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str, max: usize) -> (String, Vec<String>) {
        let mut out = Vec::new();
        let mut notes = Vec::new();
        let mut t = JsonText::new(&mut out, max);
        t.write_str(value).unwrap();
        t.finish("k", &mut notes);
        (String::from_utf8(out).unwrap(), notes)
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
    fn floats_stay_floats() {
        assert_eq!(JsonFloat(1.0).to_string(), "1.0");
        assert_eq!(JsonFloat(0.5).to_string(), "0.5");
        let big: Value = serde_json::from_str(&JsonFloat(1e300).to_string()).unwrap();
        assert!(big.is_f64());
    }
}
