//! The repairs: every value PostgreSQL could refuse is fixed on the emitting thread, and
//! each fix is named in a note for the record's [`FIXUPS_KEY`], so nothing is hidden.
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
//! | an event's own field named `_fixups`  | kept as `_fixups_from_event`                       |
//! | `Display` or `Debug` returns an error | what it wrote before the error                     |
//!
//! In every case the original value's problem is named in the note; a missing message is
//! not a problem and becomes the empty string.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

/// The metadata key under which a record lists the fix-ups applied to it.
pub const FIXUPS_KEY: &str = "_fixups";

/// Where an event's own field named [`FIXUPS_KEY`] is kept.
pub const RENAMED_FIXUPS_KEY: &str = "_fixups_from_event";

/// The metadata key under which a record handed over by another process (auditd's HTTP
/// ingest) names who handed it over, apart from the `username` it names.
pub const SENDER_KEY: &str = "_sent_by";

/// Where a record's own member named [`SENDER_KEY`] is kept.
pub const RENAMED_SENDER_KEY: &str = "_sent_by_from_event";

/// How long a quoted bad value may be inside a fix-up note.
const QUOTE_CHARS: usize = 64;

/// How long a value may be.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// Characters, as `varchar(n)` counts them.
    Chars(usize),
    /// Bytes (the message and metadata cap).
    Bytes(usize),
}

/// Removes NUL bytes and cuts to the limit, at a character boundary.
#[inline]
pub(crate) fn clean<'a>(
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

/// The key a metadata member is stored under: without NUL bytes, and never
/// [`FIXUPS_KEY`] or [`SENDER_KEY`], which only the layer writes (an event's own field of
/// such a name is kept as [`RENAMED_FIXUPS_KEY`] or [`RENAMED_SENDER_KEY`], so it cannot
/// pose as the layer's notes or as another sender). Each repair is noted.
pub(crate) fn metadata_key(key: &str, notes: &mut Vec<String>) -> String {
    for (reserved, renamed) in [
        (FIXUPS_KEY, RENAMED_FIXUPS_KEY),
        (SENDER_KEY, RENAMED_SENDER_KEY),
    ] {
        if key == reserved {
            notes.push(format!(
                "metadata: the event's own {reserved:?} field is stored as {renamed:?}"
            ));
            return renamed.to_owned();
        }
    }
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

pub(crate) fn user_id_of(raw: &Value) -> Option<i64> {
    match raw {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(crate) fn raw_text(raw: &Value) -> String {
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
pub(crate) fn quote(raw: &str) -> String {
    let mut shown: String = raw.chars().take(QUOTE_CHARS).collect();
    if shown.len() < raw.len() {
        shown.push('…');
    }
    format!("{:?}", shown.replace('\0', "\u{FFFD}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_accept_ports_and_brackets() {
        for raw in ["10.0.0.1", "10.0.0.1:443", "::1", "[::1]", "[::1]:8080"] {
            assert!(ip_of(raw).is_some(), "{raw}");
        }
        assert!(ip_of("localhost").is_none());
    }

    #[test]
    fn only_the_layer_writes_the_fixups_key() {
        let mut notes = Vec::new();
        assert_eq!(metadata_key(FIXUPS_KEY, &mut notes), RENAMED_FIXUPS_KEY);
        assert_eq!(metadata_key("a\0b", &mut notes), "a\u{FFFD}b");
        assert_eq!(metadata_key("site", &mut notes), "site");
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
