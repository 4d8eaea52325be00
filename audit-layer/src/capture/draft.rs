//! The draft of a record: what the column-named fields of an event or span hold, before
//! `sanitize` checks and sizes them.

use std::net::IpAddr;

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::fixups;
use super::json::{Members, KEEP_CAPACITY};
use super::redact::Redactor;

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

    /// Adds a JSON object's members to the metadata: secrets redacted at any depth, values
    /// repaired and capped, reserved keys renamed, each repair noted. Both a
    /// `metadata = %json` field and a record sent as JSON (`capture::object`) come here.
    pub(crate) fn merge_object(
        &mut self,
        mut map: Map<String, Value>,
        redactor: &Redactor,
        max_value_bytes: usize,
    ) {
        redactor.redact_json(&mut map);
        for (key, mut value) in map {
            fixups::clean_json(&mut value, &key, max_value_bytes, &mut self.notes);
            let key = fixups::metadata_key(&key, &mut self.notes);
            self.metadata.key(&key);
            let _ = write!(self.metadata.0, "{value}");
        }
    }

    /// Parses the `ip_address` column once, for a span whose events all inherit it.
    pub(crate) fn parse_ip(&mut self) {
        self.ip = self.get(Column::IpAddress).and_then(fixups::ip_of);
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
