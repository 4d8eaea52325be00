//! Turning a draft into the record that is queued, with every value PostgreSQL would
//! refuse repaired (`fixups`) and the repairs listed in the record's own metadata.
//!
//! One bad record must never fail a batch, and a record must never be lost for its content,
//! so this never fails: it repairs, counts and notes.

use std::borrow::Cow;

use super::draft::{Column, Draft};
use super::fixups::{self, ip_of, quote, raw_text, user_id_of, Limit, FIXUPS_KEY};
use super::json::{json_string, Members};
use crate::queue::{EventTime, Pending, TextColumns};
use crate::record::Severity;

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
        Some(m) => fixups::clean(
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
        Some(v) => fixups::clean(v, column, Limit::Chars(max_chars), nul_free, notes),
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
    value.map(|v| fixups::clean(v, column, Limit::Chars(max_chars), nul_free, notes))
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
}
