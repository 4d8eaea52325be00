//! Turning a draft into a record PostgreSQL will accept, fixing what it would refuse.
//!
//! One bad record must never fail a batch, and a record must never be lost for its content.
//! So every value PostgreSQL could reject is repaired here, on the emitting thread, and each
//! repair is both counted and written into the record's metadata under [`FIXUPS_KEY`], where
//! whoever reads the record sees it.
//!
//! | problem                               | fix-up                                             |
//! |---------------------------------------|----------------------------------------------------|
//! | NUL byte in any text (PostgreSQL rejects it) | replaced by U+FFFD `�`                      |
//! | value longer than its column          | cut at a character boundary to the column's length |
//! | message over the configured cap       | cut at a character boundary to the cap             |
//! | metadata text over the same cap       | cut at a character boundary to the cap             |
//! | severity not one of the four          | the level's severity                               |
//! | no `event_type` / no `username`       | `"unknown"`                                        |
//! | `user_id` not an integer              | NULL                                               |
//! | `ip_address` not an IP address        | NULL (a port, as in `10.0.0.1:443`, is just dropped) |
//!
//! In every case the original value's problem is named in the fix-up note, so nothing is
//! hidden; a missing message is not a problem and becomes the empty string.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use crate::capture::{json_string, Column, Draft, Members};
use crate::pending::{EventTime, Pending, TextColumns};
use crate::record::Severity;

/// The metadata key under which a record lists the fix-ups applied to it.
pub const FIXUPS_KEY: &str = "_fixups";

/// Where an event's own field named [`FIXUPS_KEY`] is kept.
pub const RENAMED_FIXUPS_KEY: &str = "_fixups_from_event";

/// What a missing `username` or `event_type` is stored as.
pub const UNKNOWN: &str = "unknown";

/// The lengths, in characters, of the `varchar` columns of `audit_logs`.
///
/// A test compares these with the live schema, so they cannot drift apart.
pub mod column_limits {
    /// `username varchar(255)`
    pub const USERNAME: usize = 255;
    /// `event_type varchar(100)`
    pub const EVENT_TYPE: usize = 100;
    /// `resource_type varchar(100)`
    pub const RESOURCE_TYPE: usize = 100;
    /// `resource_id varchar(255)`
    pub const RESOURCE_ID: usize = 255;
    /// `resource_name varchar(255)`
    pub const RESOURCE_NAME: usize = 255;
}

/// The default cap on `message` and on each metadata text value: 64 KiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How long a quoted bad value may be inside a fix-up note.
const QUOTE_CHARS: usize = 64;

/// Builds the final record from a draft, repairing what PostgreSQL would refuse.
///
/// Returns the record and the number of fix-ups applied. Nothing is allocated but the
/// record's own buffer unless a value needs repairing.
pub(crate) fn finish(
    draft: &Draft,
    span_metadata: &Members,
    level: tracing::Level,
    created_at: EventTime,
    max_message_bytes: usize,
) -> (Pending, u64) {
    let mut notes: Vec<String> = Vec::new();
    // One look at all the text the event set (columns are short, and a call per column
    // cost a fifth of this function), then per column only if there is a NUL at all.
    let nul_free = !draft.has_nul();

    let username = required(
        draft.get(Column::Username),
        "username",
        column_limits::USERNAME,
        nul_free,
        &mut notes,
    );
    let event_type = required(
        draft.get(Column::EventType),
        "event_type",
        column_limits::EVENT_TYPE,
        nul_free,
        &mut notes,
    );
    let message = match draft.get(Column::Message) {
        Some(m) => clean(
            m,
            "message",
            Limit::Bytes(max_message_bytes),
            nul_free,
            &mut notes,
        ),
        None => Cow::Borrowed(""),
    };
    let resource_type = optional(
        draft.get(Column::ResourceType),
        "resource_type",
        column_limits::RESOURCE_TYPE,
        nul_free,
        &mut notes,
    );
    let resource_id = optional(
        draft.get(Column::ResourceId),
        "resource_id",
        column_limits::RESOURCE_ID,
        nul_free,
        &mut notes,
    );
    let resource_name = optional(
        draft.get(Column::ResourceName),
        "resource_name",
        column_limits::RESOURCE_NAME,
        nul_free,
        &mut notes,
    );
    let severity = match draft.get(Column::Severity) {
        None => Severity::from_level(level),
        Some(raw) => match raw.parse::<Severity>() {
            Ok(s) => s,
            Err(_) => {
                let fallback = Severity::from_level(level);
                notes.push(format!(
                    "severity: unknown value {}, stored as {fallback}",
                    quote(raw)
                ));
                fallback
            }
        },
    };
    let user_id = draft
        .user_id
        .as_ref()
        .and_then(|raw| match user_id_of(raw) {
            Some(id) => Some(id),
            None => {
                notes.push(format!(
                    "user_id: not a 64-bit integer: {}, stored as NULL",
                    quote(&raw_text(raw))
                ));
                None
            }
        });
    let ip_address =
        draft
            .get(Column::IpAddress)
            .and_then(|raw| match draft.ip.or_else(|| ip_of(raw)) {
                Some(ip) => Some(ip),
                None => {
                    notes.push(format!(
                        "ip_address: not an IP address: {}, stored as NULL",
                        quote(raw)
                    ));
                    None
                }
            });

    // Metadata was repaired as it was captured; its notes follow the columns' notes.
    notes.extend(draft.notes.iter().cloned());
    let fixups = notes.len() as u64;
    // Spans first, outermost first, then the event: jsonb keeps the last of duplicate keys,
    // so the innermost span wins over outer ones and the event wins over all.
    let mut fixups_member = Members::default();
    if fixups > 0 {
        fixups_member.key(FIXUPS_KEY);
        fixups_member.0.push('[');
        for (i, note) in notes.iter().enumerate() {
            if i > 0 {
                fixups_member.0.push(',');
            }
            json_string(&mut fixups_member.0, note);
        }
        fixups_member.0.push(']');
    }
    let mut pieces: [&str; 7] = [""; 7];
    let mut count = 0;
    for members in [span_metadata, &draft.metadata, &fixups_member] {
        if members.is_empty() {
            continue;
        }
        pieces[count] = if count == 0 { "{" } else { "," };
        pieces[count + 1] = members.as_str();
        count += 2;
    }
    let metadata = (count > 0).then(|| {
        pieces[count] = "}";
        &pieces[..=count]
    });

    let record = Pending::new(
        TextColumns {
            username: &username,
            event_type: &event_type,
            message: &message,
            resource_type: resource_type.as_deref(),
            resource_id: resource_id.as_deref(),
            resource_name: resource_name.as_deref(),
            metadata,
        },
        user_id,
        ip_address,
        severity,
        created_at,
    );
    (record, fixups)
}

fn required<'a>(
    value: Option<&'a str>,
    column: &str,
    max_chars: usize,
    nul_free: bool,
    notes: &mut Vec<String>,
) -> Cow<'a, str> {
    match value {
        Some(v) => clean(v, column, Limit::Chars(max_chars), nul_free, notes),
        None => {
            notes.push(format!("{column}: missing, stored as {UNKNOWN:?}"));
            Cow::Borrowed(UNKNOWN)
        }
    }
}

fn optional<'a>(
    value: Option<&'a str>,
    column: &str,
    max_chars: usize,
    nul_free: bool,
    notes: &mut Vec<String>,
) -> Option<Cow<'a, str>> {
    value.map(|v| clean(v, column, Limit::Chars(max_chars), nul_free, notes))
}

/// How long a value may be.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// Characters, as `varchar(n)` counts them.
    Chars(usize),
    /// Bytes (the message and metadata cap).
    Bytes(usize),
}

/// Removes NUL bytes and cuts to the limit, at a character boundary.
#[inline]
fn clean<'a>(
    value: &'a str,
    what: &str,
    limit: Limit,
    nul_free: bool,
    notes: &mut Vec<String>,
) -> Cow<'a, str> {
    // A string of at most n bytes has at most n characters: the common case costs a
    // comparison, without a call.
    let (Limit::Chars(max) | Limit::Bytes(max)) = limit;
    if nul_free && value.len() <= max {
        return Cow::Borrowed(value);
    }
    repair(value, what, limit, nul_free, notes)
}

#[cold]
fn repair<'a>(
    value: &'a str,
    what: &str,
    limit: Limit,
    nul_free: bool,
    notes: &mut Vec<String>,
) -> Cow<'a, str> {
    let mut value = strip_nul(value, nul_free, what, notes);
    match limit {
        Limit::Chars(max) if value.len() > max => {
            if let Some((cut, _)) = value.char_indices().nth(max) {
                let chars = value.chars().count();
                truncate(&mut value, cut);
                notes.push(format!(
                    "{what}: truncated from {chars} to {max} characters"
                ));
            }
        }
        Limit::Bytes(max) if value.len() > max => {
            let mut cut = max;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            let bytes = value.len();
            truncate(&mut value, cut);
            notes.push(format!("{what}: truncated from {bytes} to {cut} bytes"));
        }
        _ => {}
    }
    value
}

fn truncate(value: &mut Cow<'_, str>, at: usize) {
    match value {
        Cow::Borrowed(s) => *s = &s[..at],
        Cow::Owned(s) => s.truncate(at),
    }
}

/// `value` with NUL bytes replaced (and noted), unless the caller already knows it has none.
fn strip_nul<'a>(
    value: &'a str,
    known_nul_free: bool,
    what: &str,
    notes: &mut Vec<String>,
) -> Cow<'a, str> {
    if known_nul_free || !value.contains('\0') {
        return Cow::Borrowed(value);
    }
    let count = value.matches('\0').count();
    notes.push(format!("{what}: {count} NUL byte(s) replaced by U+FFFD"));
    Cow::Owned(value.replace('\0', "\u{FFFD}"))
}

/// A metadata key without NUL bytes (noted when there were some).
pub(crate) fn clean_key(key: &str, notes: &mut Vec<String>) -> String {
    strip_nul(key, false, "metadata key", notes).into_owned()
}

/// Repairs a metadata value in place; allocates only when something needs repairing.
pub(crate) fn clean_json(value: &mut Value, key: &str, max_bytes: usize, notes: &mut Vec<String>) {
    match value {
        Value::String(s) if s.len() > max_bytes || s.contains('\0') => {
            *s = clean(
                s,
                &format!("metadata.{key}"),
                Limit::Bytes(max_bytes),
                false,
                notes,
            )
            .into_owned();
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| clean_json(v, key, max_bytes, notes)),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0') || k.len() > max_bytes) {
                let label = format!("metadata.{key} key");
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            clean(&k, &label, Limit::Bytes(max_bytes), false, notes).into_owned(),
                            v,
                        )
                    })
                    .collect();
            }
            map.values_mut()
                .for_each(|v| clean_json(v, key, max_bytes, notes));
        }
        _ => {}
    }
}

fn user_id_of(raw: &Value) -> Option<i64> {
    match raw {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn raw_text(raw: &Value) -> String {
    match raw {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn ip_of(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            // `[::1]` without a port.
            raw.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
}

/// A bad value as it appears in a fix-up note: short, NUL-free, quoted.
fn quote(raw: &str) -> String {
    let mut shown: String = raw.chars().take(QUOTE_CHARS).collect();
    if shown.len() < raw.len() {
        shown.push('…');
    }
    format!("{:?}", shown.replace('\0', "\u{FFFD}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish_default(draft: Draft) -> (crate::record::AuditLog, u64) {
        let (record, fixups) = finish(
            &draft,
            &Members::default(),
            tracing::Level::INFO,
            EventTime::now(),
            16,
        );
        (record.to_log(), fixups)
    }

    fn complete() -> Draft {
        let mut draft = Draft::default();
        draft.set(Column::Username, "alice");
        draft.set(Column::EventType, "authentication");
        draft.set(Column::Message, "User login");
        draft
    }

    #[test]
    fn a_clean_draft_needs_no_fixup() {
        let (log, fixups) = finish_default(complete());
        assert_eq!(fixups, 0);
        assert!(log.metadata.is_empty());
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        let mut draft = complete();
        draft.set(Column::Message, "ééééééééééé"); // 22 bytes, 2 bytes per char
        let (log, fixups) = finish_default(draft);
        assert_eq!(fixups, 1);
        assert_eq!(log.message, "éééééééé");
        let notes = &log.metadata[FIXUPS_KEY];
        assert_eq!(notes[0], "message: truncated from 22 to 16 bytes");
    }

    #[test]
    fn column_lengths_count_characters_not_bytes() {
        let mut draft = complete();
        draft.set(Column::ResourceType, &"ü".repeat(100)); // 200 bytes but exactly 100 chars
        let (log, fixups) = finish_default(draft);
        assert_eq!(fixups, 0);
        assert_eq!(log.resource_type.unwrap().chars().count(), 100);
    }

    #[test]
    fn ip_addresses_accept_ports_and_brackets() {
        for raw in ["10.0.0.1", "10.0.0.1:443", "::1", "[::1]", "[::1]:8080"] {
            assert!(ip_of(raw).is_some(), "{raw}");
        }
        assert!(ip_of("localhost").is_none());
    }
}
