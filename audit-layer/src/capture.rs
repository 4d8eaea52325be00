//! Reading tracing fields into a draft record.
//!
//! Fields named like a column fill that column; every other field goes into `metadata` as
//! typed JSON (numbers stay numbers, booleans stay booleans). Secrets are replaced here,
//! before their value is ever formatted into memory the layer keeps.
//!
//! Column values go into one text buffer and metadata into one buffer of JSON object
//! members, both kept per thread and reused by the layer: no map, and no allocation per
//! field or per event (allocations were most of what an event cost its caller, see
//! BENCHMARKS.md). Where each field goes is decided once per callsite (`fields`). Values
//! PostgreSQL would refuse (NUL) or that are over the cap are repaired as they are
//! written, and noted for the record's `_fixups`.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};

use crate::fields::{CallsitePlan, FieldPlan, Slot};
use crate::redact::{Redactor, REDACTED};
use crate::sanitize::{self, FIXUPS_KEY, RENAMED_FIXUPS_KEY};

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

/// The text columns an event or span can set, in the order a [`Draft`] indexes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    Username,
    EventType,
    Message,
    IpAddress,
    ResourceType,
    ResourceId,
    ResourceName,
    Severity,
}

impl Column {
    const COUNT: usize = 8;

    const ALL: [Column; Column::COUNT] = [
        Column::Username,
        Column::EventType,
        Column::Message,
        Column::IpAddress,
        Column::ResourceType,
        Column::ResourceId,
        Column::ResourceName,
        Column::Severity,
    ];

    /// The columns a span may carry for the events inside it (`user_id` aside, which is
    /// not text).
    const INHERITED: [Column; 5] = [
        Column::Username,
        Column::IpAddress,
        Column::ResourceType,
        Column::ResourceId,
        Column::ResourceName,
    ];

    /// The column a field of this name fills, if any.
    pub(crate) fn of_field(name: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.field_name() == name)
    }

    /// The name of the field that fills this column (the column's own name).
    pub(crate) fn field_name(self) -> &'static str {
        match self {
            Column::Username => "username",
            Column::EventType => "event_type",
            Column::Message => "message",
            Column::IpAddress => "ip_address",
            Column::ResourceType => "resource_type",
            Column::ResourceId => "resource_id",
            Column::ResourceName => "resource_name",
            Column::Severity => "severity",
        }
    }
}

/// The field that fills `user_id` (a number, not text, so not a [`Column`]).
pub(crate) const USER_ID_FIELD: &str = "user_id";

/// Whether a span field of this name is context the events inside the span inherit.
pub(crate) fn is_inherited_field(name: &str) -> bool {
    name == USER_ID_FIELD || Column::INHERITED.iter().any(|c| c.field_name() == name)
}

/// What the column-named fields of an event or span hold, before `sanitize` checks and
/// sizes them.
///
/// Every text value lives in one buffer, so filling a draft allocates nothing once the
/// buffer has grown to an event's size: the layer keeps one draft per thread and reuses it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Draft {
    text: String,
    columns: [Option<(u32, u32)>; Column::COUNT],
    /// The `ip_address` column parsed, when it was parsed once for many events (a span's).
    pub(crate) ip: Option<IpAddr>,
    pub(crate) user_id: Option<Value>,
    pub(crate) metadata: Members,
    /// Fix-up notes made while writing metadata.
    pub(crate) notes: Vec<String>,
}

/// A reused draft whose buffers grew past this is given back to the allocator, so one
/// huge event does not pin its size in every thread for good.
const KEEP_CAPACITY: usize = 16 * 1024;

impl Draft {
    /// A column's value, if the fields set it.
    pub(crate) fn get(&self, column: Column) -> Option<&str> {
        let (start, end) = self.columns[column as usize]?;
        self.text.get(start as usize..end as usize)
    }

    /// Sets a column to `value`.
    pub(crate) fn set(&mut self, column: Column, value: &str) {
        self.set_with(column, |text| text.push_str(value));
    }

    /// Sets a column to what `write` appends to the buffer (a formatted value is written
    /// in place, never into a `String` of its own).
    pub(crate) fn set_with(&mut self, column: Column, write: impl FnOnce(&mut String)) {
        // A column set again (a field named twice) leaves its old value behind, unused:
        // rare in an event, and a span recorded again is rebuilt (`update`).
        if column == Column::IpAddress {
            self.ip = None;
        }
        let start = self.text.len();
        write(&mut self.text);
        let end = self.text.len();
        // Offsets are u32 to keep drafts small; a draft over 4 GiB keeps the column unset
        // rather than wrapping (the message cap is far below that).
        self.columns[column as usize] = match (u32::try_from(start), u32::try_from(end)) {
            (Ok(start), Ok(end)) => Some((start, end)),
            _ => None,
        };
    }

    /// Empties the draft for reuse, keeping its buffers unless one grew too large.
    pub(crate) fn clear(&mut self) {
        if self.text.capacity() > KEEP_CAPACITY {
            self.text = String::new();
        }
        self.text.clear();
        self.columns = Default::default();
        self.ip = None;
        self.user_id = None;
        self.metadata.clear();
        self.notes.clear();
    }

    /// Fills the columns this draft does not set from an enclosing span's fields.
    ///
    /// Called innermost span first, so the innermost value wins and the event's own
    /// fields win over all. (Span metadata is merged by the layer, outermost first.)
    pub(crate) fn inherit(&mut self, span: &Draft) {
        for column in Column::INHERITED {
            if self.columns[column as usize].is_none() {
                if let Some(value) = span.get(column) {
                    self.set(column, value);
                    if column == Column::IpAddress {
                        self.ip = span.ip;
                    }
                }
            }
        }
        if self.user_id.is_none() {
            self.user_id.clone_from(&span.user_id);
        }
    }

    /// This span draft with values recorded later (`Span::record`) put over it.
    pub(crate) fn update(&mut self, later: Draft) {
        // Rebuilt rather than patched, so a span recorded many times keeps one copy of
        // each column's value (metadata members recorded again are appended; in jsonb the
        // last one wins).
        let mut merged = Draft::default();
        for column in Column::INHERITED {
            if let Some(value) = later.get(column).or_else(|| self.get(column)) {
                merged.set(column, value);
            }
        }
        merged.user_id = later.user_id.or_else(|| self.user_id.take());
        merged.metadata = std::mem::take(&mut self.metadata);
        merged.metadata.extend(&later.metadata);
        merged.notes = std::mem::take(&mut self.notes);
        merged.notes.extend(later.notes);
        *self = merged;
    }

    /// Parses the `ip_address` column once, for a span whose events all inherit it.
    pub(crate) fn parse_ip(&mut self) {
        self.ip = self.get(Column::IpAddress).and_then(sanitize::ip_of);
    }

    /// Whether any text this draft holds contains a NUL byte.
    pub(crate) fn has_nul(&self) -> bool {
        memchr::memchr(0, self.text.as_bytes()).is_some()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.columns.iter().all(Option::is_none)
            && self.user_id.is_none()
            && self.metadata.is_empty()
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

/// A [`Visit`]or that writes fields into a [`Draft`], following its callsite's plan.
pub(crate) struct Capture<'a> {
    draft: &'a mut Draft,
    redactor: &'a Redactor,
    plan: &'a CallsitePlan,
    scope: Scope,
    max_value_bytes: usize,
}

/// A field's value on its way into a column.
enum ColumnValue<'v> {
    Str(&'v str),
    Debug(&'v dyn fmt::Debug),
    Json(Value),
}

/// Where one field goes in this capture.
enum Route<'p> {
    Ignore,
    Column(Slot),
    Metadata(Cow<'p, FieldPlan>),
}

impl<'a> Capture<'a> {
    pub(crate) fn new(
        draft: &'a mut Draft,
        redactor: &'a Redactor,
        plan: &'a CallsitePlan,
        scope: Scope,
        max_value_bytes: usize,
    ) -> Self {
        Capture {
            draft,
            redactor,
            plan,
            scope,
            max_value_bytes,
        }
    }

    #[inline(always)]
    fn route(&self, field: &Field) -> Route<'a> {
        let plan = self.plan.field(field);
        if self.scope == Scope::InheritedColumns && !plan.inherited {
            return Route::Ignore;
        }
        match plan.slot {
            Slot::Metadata => Route::Metadata(plan),
            slot => Route::Column(slot),
        }
    }

    /// Stores a value in its column slot; text is written straight into the draft.
    fn put_column(&mut self, slot: Slot, value: ColumnValue<'_>) {
        match (slot, value) {
            (Slot::Metadata, _) => {}
            (Slot::UserId, ColumnValue::Str(s)) => {
                self.draft.user_id = Some(Value::String(s.to_owned()))
            }
            (Slot::UserId, ColumnValue::Debug(d)) => {
                self.draft.user_id = Some(Value::String(format!("{d:?}")))
            }
            (Slot::UserId, ColumnValue::Json(v)) => self.draft.user_id = Some(v),
            (Slot::Text(column), ColumnValue::Str(s)) => self.draft.set(column, s),
            (Slot::Text(column), ColumnValue::Debug(d)) => self.draft.set_with(column, |text| {
                let _ = write!(text, "{d:?}");
            }),
            (Slot::Text(column), ColumnValue::Json(Value::String(s))) => self.draft.set(column, &s),
            (Slot::Text(column), ColumnValue::Json(v)) => self.draft.set_with(column, |text| {
                let _ = write!(text, "{v}");
            }),
        }
    }

    /// Starts the metadata member of a field, or writes `[REDACTED]` and returns `false`.
    #[inline(always)]
    fn meta_key(&mut self, plan: &FieldPlan) -> bool {
        if !plan.key_notes.is_empty() {
            self.draft.notes.extend(plan.key_notes.iter().cloned());
        }
        self.draft.metadata.raw_key(&plan.key);
        if plan.secret {
            json_string(&mut self.draft.metadata.0, REDACTED);
            return false;
        }
        true
    }

    /// A metadata value given as text, escaped and repaired as it is written.
    fn meta_text(
        &mut self,
        plan: &FieldPlan,
        name: &str,
        write: impl FnOnce(&mut JsonText<'_>) -> fmt::Result,
    ) {
        if !self.meta_key(plan) {
            return;
        }
        let mut text = JsonText::new(&mut self.draft.metadata.0, self.max_value_bytes);
        let _ = write(&mut text);
        text.finish(name, &mut self.draft.notes);
    }

    /// A metadata value that is a number or boolean, written as JSON text.
    #[inline(always)]
    fn meta_raw(&mut self, plan: &FieldPlan, value: &str) {
        if self.meta_key(plan) {
            self.draft.metadata.0.push_str(value);
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
            let _ = write!(self.draft.metadata.0, "{value}");
        }
        true
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
    fn new(out: &'a mut String, max: usize) -> Self {
        out.push('"');
        JsonText {
            out,
            max,
            seen: 0,
            kept: 0,
            nuls: 0,
        }
    }

    fn finish(self, name: &str, notes: &mut Vec<String>) {
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

/// Replaces secrets at any depth of a JSON object.
fn redact_nested(redactor: &Redactor, map: &mut Map<String, Value>) {
    for (key, value) in map.iter_mut() {
        if redactor.is_secret(key) {
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
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) if field.name() == "metadata" => {
                let text = format!("{value:?}");
                if !self.merge_json(&text) {
                    self.meta_text(&plan, field.name(), |t| t.write_str(&text));
                }
            }
            Route::Metadata(plan) => {
                self.meta_text(&plan, field.name(), |t| write!(t, "{value:?}"))
            }
            // The message and other text columns, formatted straight into the draft.
            Route::Column(Slot::Text(column)) => self.draft.set_with(column, |text| {
                let _ = write!(text, "{value:?}");
            }),
            Route::Column(slot) => self.put_column(slot, ColumnValue::Debug(value)),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(_) if field.name() == "metadata" && self.merge_json(value) => {}
            Route::Metadata(plan) => self.meta_text(&plan, field.name(), |t| t.write_str(value)),
            // The common case, straight into the draft.
            Route::Column(Slot::Text(column)) => self.draft.set(column, value),
            Route::Column(slot) => self.put_column(slot, ColumnValue::Str(value)),
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
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) => self.meta_text(&plan, field.name(), |t| chain(t)),
            Route::Column(slot) => {
                let mut text = String::new();
                let _ = chain(&mut text);
                self.put_column(slot, ColumnValue::Str(&text))
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) => self.meta_raw(&plan, itoa::Buffer::new().format(value)),
            Route::Column(slot) => {
                self.put_column(slot, ColumnValue::Json(Value::Number(value.into())))
            }
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) => self.meta_raw(&plan, itoa::Buffer::new().format(value)),
            Route::Column(slot) => {
                self.put_column(slot, ColumnValue::Json(Value::Number(value.into())))
            }
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
        match self.route(field) {
            Route::Ignore => {}
            // The shortest round-trip form, as serde_json writes it (`1.0`, `1e300`): valid
            // JSON that reads back as a float.
            Route::Metadata(plan) => self.meta_raw(&plan, zmij::Buffer::new().format_finite(value)),
            Route::Column(slot) => {
                let number = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
                self.put_column(slot, ColumnValue::Json(number))
            }
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        match self.route(field) {
            Route::Ignore => {}
            Route::Metadata(plan) => self.meta_raw(&plan, if value { "true" } else { "false" }),
            Route::Column(slot) => self.put_column(slot, ColumnValue::Json(Value::Bool(value))),
        }
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
    fn floats_stay_floats() {
        // Metadata floats are written by zmij; jsonb and serde_json must read them back
        // as floats, not integers, and 1e300 must not become 300 digits.
        let mut buffer = zmij::Buffer::new();
        assert_eq!(buffer.format_finite(1.0), "1.0");
        assert_eq!(buffer.format_finite(0.5), "0.5");
        let big = buffer.format_finite(1e300).to_owned();
        assert!(big.len() < 10, "{big}");
        assert!(serde_json::from_str::<Value>(&big).unwrap().is_f64());
    }

    #[test]
    fn json_strings_escape_only_what_json_requires() {
        let mut out = String::new();
        json_string(&mut out, "plain é");
        json_string(&mut out, "q\"b\\\u{1f}");
        assert_eq!(out, r#""plain é""q\"b\\\u001f""#);
    }
}
